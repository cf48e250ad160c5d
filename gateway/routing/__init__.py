"""Routing: which providers may take a request, and in what order."""

from gateway.routing.plan import Candidate, Plan, plan_request, rank_candidates

__all__ = ["Candidate", "Plan", "plan_request", "rank_candidates"]
