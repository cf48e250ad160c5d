from gateway.docs import DOC_PATH, render
from gateway.plugins import discover


def test_providers_doc_is_generated_from_the_data():
    assert DOC_PATH.read_text() == render(discover().providers), "run: python -m gateway.docs"
