from pathlib import Path

from nbkube.api.docs import END, START, reference

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_api_reference_matches_the_crds():
    text = README.read_text()
    block = text[text.index(START) : text.index(END) + len(END)]
    stale = "README's API reference is stale: run python -m nbkube.api.docs README.md"
    assert block == reference(), stale


def test_api_reference_documents_every_spec_field_of_both_resources():
    ref = reference()
    fields = ("`environmentRef.name`", "`notebook.configMapRef.key`", "`matrix`", "`warmKernels`", "`image`")
    for field in fields:
        assert field in ref
