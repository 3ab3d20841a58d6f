#!/usr/bin/env python3
"""Builds api/assets/DejaVuSans-subset.ttf, the font the charts embed.

Input: DejaVuSans.ttf 2.37 from Debian's fonts-dejavu-core 2.37-6
(sha256 abdc775b21b1bc470d50c97e790d276f2054b7504e56e5bd3e64f48d68582322).

1. Subset to Basic Latin, Latin-1 and a few symbols (fontTools.subset).
2. Give every simple glyph whose outline starts right of its origin one extra
   contour: a single on-curve point at (0, 0), which draws nothing. plotters
   0.3.7 places each glyph's bitmap at the pen position and drops the left
   side bearing (its ab_glyph text code ignores `px_bounds().min.x`), which
   puts letters unevenly apart ("USD T"). With the point, each outline's
   bounds start at its origin, so the bitmap includes the bearing and glyphs
   land where the font puts them. Advances and shapes are unchanged.

Run with the project venv (fontTools 4.68.0); the output's sha256 is
ae9f0f7bbffe3a166bf1a7d9b1c50b57c0f750781ee0075624cabb11af53ff27:
    .venv/bin/python api/assets/subset_font.py /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf
"""

import hashlib
import subprocess
import sys
from pathlib import Path

from fontTools.ttLib import TTFont

UNICODES = (
    "U+0020-007E,U+00A0-00FF,U+2013,U+2014,U+2018,U+2019,U+201C,U+201D,U+2022,U+2026,"
    "U+2212,U+2248,U+2264,U+2265,U+221A,U+0394,U+03C3,U+2192"
)
EXPECTED = "abdc775b21b1bc470d50c97e790d276f2054b7504e56e5bd3e64f48d68582322"


def main(source: str) -> None:
    digest = hashlib.sha256(Path(source).read_bytes()).hexdigest()
    if digest != EXPECTED:
        sys.exit(f"{source}: sha256 {digest}, expected DejaVu Sans 2.37 ({EXPECTED})")
    out = Path(__file__).with_name("DejaVuSans-subset.ttf")
    subprocess.run(
        [sys.executable, "-m", "fontTools.subset", source, f"--unicodes={UNICODES}",
         "--layout-features=kern", f"--output-file={out}"],
        check=True,
    )
    font = TTFont(out, recalcTimestamp=False)  # reproducible bytes
    glyf, hmtx = font["glyf"], font["hmtx"]
    for name in font.getGlyphOrder():
        glyph = glyf[name]
        if glyph.isComposite() or glyph.numberOfContours <= 0:
            continue
        glyph.recalcBounds(glyf)
        if glyph.xMin <= 0:
            continue
        glyph.coordinates.append((0, 0))
        glyph.flags.append(1)  # on curve
        glyph.endPtsOfContours.append(len(glyph.coordinates) - 1)
        glyph.numberOfContours += 1
        glyph.recalcBounds(glyf)
        advance, _ = hmtx[name]
        hmtx[name] = (advance, glyph.xMin)
    font.save(out)


if __name__ == "__main__":
    main(sys.argv[1])
