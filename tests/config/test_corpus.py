# ruff: noqa: E501 - the table below is keyed by long corpus paths, one per line
"""Every workflows/variables file of the compatibility corpus loads, or fails as expected.

Each file is laid out as a temp repository (with the repository's variables and providers
file of that time) and every workflow is resolved. A failure must be a `ConfigError` whose
message starts with ``file:line``; the files that fail are listed below with a fragment of the
expected message, so a file that starts or stops failing fails this test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.config.corpus import CORPUS, Case, cases, in_ci, lay_out

from dstack.config import load_config, resolve_workflow
from dstack.errors import ConfigError

# corpus file → a fragment of the error it must raise (the reason it is not accepted)
EXPECTED_FAILURES: dict[str, str] = {
    "OlegBEZb__Personalize-Expedia-Hotel-Searches/.dstack/workflows@02fcc887.yaml": "'depends-on' item is a mapping {download-data: t",
    "OlegBEZb__Personalize-Expedia-Hotel-Searches/.dstack/workflows@14c4906b.yaml": "unknown reference '${{ gpu }}'",
    "OlegBEZb__Personalize-Expedia-Hotel-Searches/.dstack/workflows@611e3e3e.yaml": "unknown reference '${{ gpu }}'",
    "OlegBEZb__Personalize-Expedia-Hotel-Searches/.dstack/workflows@bcdebbc9.yaml": "unknown reference '${{ gpu }}'",
    "OlegBEZb__Personalize-Expedia-Hotel-Searches/.dstack/workflows@ca74edf7.yaml": "unknown reference '${{ gpu }}'",
    "OlegBEZb__Personalize-Expedia-Hotel-Searches/.dstack/workflows@d70acb27.yaml": "unknown reference '${{ gpu }}'",
    "OlegBEZb__Personalize-Expedia-Hotel-Searches/.dstack/workflows@fe4b48bf.yaml": "unknown reference '${{ gpu }}'",
    "dstackai__dstack/_docs-snippets/README.md@9a32bd2d#1.yaml": "unknown reference '${{ gpu }}'",
    "dstackai__dstack/_docs-snippets/README.md@e0d81a53#1.yaml": "unknown reference '${{ gpu }}'",
    "dstackai__dstack/_docs-snippets/docs/custom-providers.md@e1dcc1a9#6.yaml": "unknown key 'url'",
    "dstackai__dstack/_docs-snippets/docs/custom-providers.md@e1dcc1a9#8.yaml": "custom providers from another repository are not",
    "dstackai__dstack/_docs-snippets/docs/examples/index.md@bff1ac2b#25.yaml": "unknown key 'resources.remote'",
    "dstackai__dstack/_docs-snippets/docs/examples/tensorboard.md@7d2187bc#4.yaml": "invalid port 'port 6006'",
    "dstackai__dstack/_docs-snippets/docs/index.md@3496c5fe#1.yaml": "unknown key 'output'",
    "dstackai__dstack/_docs-snippets/docs/index.md@3496c5fe#4.yaml": "unknown reference '${{ pgpu }}'",
    "dstackai__dstack/_docs-snippets/docs/index.md@3d44db3a#1.yaml": "unknown reference '${{ pgpu }}'",
    "dstackai__dstack/_docs-snippets/docs/index.md@3d44db3a#4.yaml": "unknown reference '${{ pgpu }}'",
    "dstackai__dstack/_docs-snippets/docs/index.md@48e840da#1.yaml": "unknown reference '${{ pgpu }}'",
    "dstackai__dstack/_docs-snippets/docs/index.md@e0d81a53#1.yaml": "unknown reference '${{ pgpu }}'",
    "dstackai__dstack/_docs-snippets/docs/index.md@e0d81a53#4.yaml": "unknown reference '${{ pgpu }}'",
    "dstackai__dstack/_docs-snippets/docs/index.md@ee8f4bdb#1.yaml": "invalid 'resources.gpu': expected a number of GP",
    "dstackai__dstack/_docs-snippets/docs/index.md@ee8f4bdb#6.yaml": "invalid 'resources.gpu': expected a number of GP",
    "dstackai__dstack/_docs-snippets/docs/quickstart.md@3d44db3a#4.yaml": "unknown reference '${{ gpu }}'",
    "dstackai__dstack/_docs-snippets/docs/quickstart.md@e0d81a53#4.yaml": "unknown reference '${{ gpu }}'",
    "dstackai__dstack/_docs-snippets/docs/workflows.md@912708e2#1.yaml": "unknown reference '${{ pgpu }}'",
    "dstackai__dstack/_docs-snippets/docs/workflows.md@912708e2#5.yaml": "unknown key 'url'",
    "dstackai__dstack/_docs-snippets/docs/workflows.md@e0d81a53#1.yaml": "unknown reference '${{ pgpu }}'",
    "dstackai__dstack/_docs-snippets/providers/curl/README.md@cd9cee2f#1.yaml": "unknown key 'url'",
    "dstackai__dstack/_docs-snippets/providers/streamlit/README.md@ab5a8a97#1.yaml": "invalid YAML: could not find expected ':'",
    "dstackai__gpt-2/.dstack/workflows@0cf48bbe.yaml": "unsupported legacy format (2021): key 'params'",
    "dstackai__gpt-2/.dstack/workflows@4630ea95.yaml": "unsupported legacy format (2021): 'depends-on' i",
    "dstackai__gpt-2/.dstack/workflows@4cc3374b.yaml": "unsupported legacy format (2021): 'depends-on' i",
    "dstackai__gpt-2/.dstack/workflows@5e475b19.yaml": "unsupported legacy format (2021): 'depends-on' i",
    "dstackai__gpt-2/.dstack/workflows@784fff8a.yaml": "unsupported legacy format (2021): 'depends-on' i",
    "dstackai__gpt-2/.dstack/workflows@79e278db.yaml": "unsupported legacy format (2021): 'depends-on' i",
    "dstackai__gpt-2/.dstack/workflows@7bc24f4f.yaml": "unsupported legacy format (2021): key 'id'",
    "dstackai__gpt-2/.dstack/workflows@864ef88b.yaml": "unsupported legacy format (2021): key 'id'",
    "dstackai__gpt-2/.dstack/workflows@8ebb4fd2.yaml": "unsupported legacy format (2021): 'depends-on' i",
    "dstackai__gpt-2/.dstack/workflows@91dc1493.yaml": "unsupported legacy format (2021): 'depends-on' i",
    "dstackai__gpt-2/.dstack/workflows@94f2b682.yaml": "unsupported legacy format (2021): 'depends-on' i",
    "dstackai__gpt-2/.dstack/workflows@999e1e62.yaml": "unsupported legacy format (2021): 'depends-on' i",
    "dstackai__gpt-2/.dstack/workflows@ba75d98f.yaml": "unsupported legacy format (2021): 'depends-on' i",
    "dstackai__gpt-2/.dstack/workflows@d6bb1ea4.yaml": "unsupported legacy format (2021): 'depends-on' i",
    "dstackai__gpt-2/.dstack/workflows@e619809c.yaml": "unsupported legacy format (2021): 'depends-on' i",
    "dstackai__gpt-2/.dstack/workflows@f919ad31.yaml": "unsupported legacy format (2021): key 'params'",
    "dstackai__gpt-2/.dstack/workflows@ffd82177.yaml": "unsupported legacy format (2021): key 'dependenc",
    "eafpres__dstack/.dstack/workflows@394e456d.yaml": "invalid YAML: could not find expected ':'",
    "eafpres__dstack/.dstack/workflows@76315d90.yaml": "invalid YAML: could not find expected ':'",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@035d6162.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@0a192074.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@1863bad6.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@3321ba74.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@3c6ca93e.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@4a1c1723.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@749a70d6.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@7acd5055.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@889fb3d2.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@895f851f.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@8fbf24a8.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@91e856c4.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@a2964613.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@a6b42eb3.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@b35cdd8b.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@bcaa04c2.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@ce0623fd.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@d1785311.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@d3824c63.yaml": "custom providers from another repository are not",
    "ivan-bokov__dstack-test-providers/.dstack/workflows@fae872ea.yaml": "custom providers from another repository are not",
    "manojkrishnan2490__gpt-2/.dstack/workflows.yaml": "unsupported legacy format (2021): 'depends-on' i",
    "mmahesh__dstack_multiple_gpu/.dstack/workflows@41bd074d.yaml": "no 'provider' and no 'image'",
    "mmahesh__dstack_multiple_gpu/.dstack/workflows@4307852a.yaml": "invalid Python version {'enum': 3.9}",
    "mmahesh__dstack_multiple_gpu/.dstack/workflows@50e5c421.yaml": "unknown key 'image_name'",
    "mmahesh__dstack_multiple_gpu/.dstack/workflows@91bdce42.yaml": "unknown reference '${{ tgpu }}'",
    "mmahesh__dstack_multiple_gpu/.dstack/workflows@a5e05a4d.yaml": "invalid Python version [{'type': 'string'}, {'en",
    "mmahesh__dstack_multiple_gpu/.dstack/workflows@bbce68bc.yaml": "unknown reference '${{ pgpu }}'",
    "mmahesh__dstack_multiple_gpu/.dstack/workflows@c43b6694.yaml": "invalid YAML: found an unhashable key (a list or",
    "mmahesh__dstack_multiple_gpu/.dstack/workflows@fb169afa.yaml": "invalid 'python': expected a Python version such",
    "pragasv__dstack_example/.dstack/workflows@a226fa72.yaml": "unknown key 'artifiacts'",
    "rajeshai__dstack-pytorch/.dstack/workflows@fb13f0f9.yaml": "invalid 'artifacts[0]': expected a list of paths",
}

_LOCATED = re.compile(r"^\.dstack/[\w./-]+\.ya?ml:\d+(:\d+)?: ")


def _params() -> list[object]:
    if not CORPUS.is_dir():
        return [pytest.param(None, id="corpus-missing")]
    return [pytest.param(case, id=case.name) for case in cases()]


def _outcome(root: Path) -> str | None:
    """None when every workflow resolves, else the first error message."""
    try:
        config = load_config(root)
        for name in config.workflow_names():
            resolve_workflow(config, name, [])
    except ConfigError as exc:
        return exc.message
    return None


@pytest.mark.parametrize("case", _params())
def test_corpus_file(case: Case | None, tmp_path: Path) -> None:
    if case is None:
        if in_ci():
            pytest.fail(f"the compatibility corpus is missing: {CORPUS}")
        pytest.skip(f"the compatibility corpus is missing: {CORPUS}")
    message = _outcome(lay_out(case, tmp_path))
    expected = EXPECTED_FAILURES.get(case.name)
    if expected is None:
        assert message is None, f"{case.name} no longer loads: {message}"
        return
    assert message is not None, f"{case.name} now loads; remove it from EXPECTED_FAILURES"
    assert _LOCATED.match(message), message
    assert expected in message


def test_expected_failures_name_existing_files() -> None:
    if not CORPUS.is_dir():
        pytest.skip("corpus missing (reported by test_corpus_file)")
    names = {case.name for case in cases()}
    assert sorted(set(EXPECTED_FAILURES) - names) == []
