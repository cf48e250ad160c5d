"""Building blocks for vendor emulators: fault injection, job timelines, MP4 rendering,
and the sandbox that serves every installed provider's emulator on loopback.

Vendor emulators live in their vendor's folder and use these pieces; nothing here
knows a vendor's wire protocol.
"""
