"""Paper-size unified configs built on the meta device match Table 4 module by module."""
import pytest

from holitok_slm.param_counts import MILLION, compare_with_table4, paper_counts


@pytest.mark.parametrize("variant", ["base", "unite"])
def test_param_counts_match_table4(variant):
    rows = compare_with_table4(variant)
    bad = [(name, count, ref) for name, count, ref, ok in rows if not ok]
    assert not bad, f"modules outside tolerance: {bad}"
    # The large modules must meet the strict 3% bound on their own.
    for name, count, ref, _ in rows:
        if ref >= 100:
            assert abs(count / (ref * MILLION) - 1) <= 0.03, (name, count, ref)


def test_base_and_unite_share_llm_dit_and_bridge():
    base, unite = paper_counts("base"), paper_counts("unite")
    for name in ("llm", "dit", "bridge_eos"):
        assert base[name] == unite[name]
    # Unite swaps the 8-layer PatchEncoder for a single projection of 1536-d pooled features.
    assert unite["audio_to_llm"] == 1536 * 896 + 896 + 2 * 1536
