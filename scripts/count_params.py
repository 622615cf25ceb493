"""Prints module-by-module parameter counts of the paper-size unified configs (meta device) against Table 4."""
from __future__ import annotations

import sys

from holitok_slm.param_counts import compare_with_table4


def main() -> int:
    all_ok = True
    for variant in ("base", "unite"):
        print(f"\nHoliTok-{variant.capitalize()} (configs/unified/model_{variant}.yaml)")
        print(f"{'module':<18}{'ours':>16}{'Table 4':>10}{'diff':>9}  ok")
        for name, count, ref, ok in compare_with_table4(variant):
            all_ok &= ok
            print(f"{name:<18}{count:>16,}{ref:>9}M{100 * (count / (ref * 1e6) - 1):>+8.1f}%  {'yes' if ok else 'NO'}")
    print("\nTolerance: 3% per module, or the table's rounding (+-0.5M) for the 1M/2M rows.")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
