"""Write an HTML template for ``dvc plots show --html-template`` with Vega inlined: no CDN.

DVC's default page loads vega, vega-lite and vega-embed from a CDN, so offline the curves and the
confusion plot silently vanish. ``make plots`` fetches the same versions DVC names with npm into
.tools/vega (once), then runs this script and ``dvc plots show`` with its output.

Usage: python plots/offline_template.py VEGA_DIR OUT_HTML
"""

from __future__ import annotations

import sys
from pathlib import Path

# The builds DVC's own page uses (dvc_render/vega.py), unpacked from their npm packages.
SCRIPTS = (
    "vega-5.20.2/build/vega.min.js",
    "vega-lite-5.2.0/build/vega-lite.min.js",
    "vega-embed-6.18.2/build/vega-embed.min.js",
)
PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    <title>DVC Plot</title>
{inline_scripts}
    <style>
        table {{ border-spacing: 15px; }}
        /* DVC's image rows never wrap (an inline white-space: nowrap): four experiments' PNGs
           made the page wider than the screen. They wrap, three at most a row. */
        div[id] {{ white-space: normal !important; }}
        img {{ max-width: 30vw; height: auto; }}
    </style>
</head>
<body>
    {{plot_divs}}
</body>
</html>
"""


def main(vega_dir: Path, out: Path) -> None:
    """Inline the three scripts into the page; DVC fills in ``{plot_divs}``."""
    missing = [name for name in SCRIPTS if not (vega_dir / name).is_file()]
    if missing:
        sys.exit(f"error: {vega_dir}: missing {', '.join(missing)}; run `make plots`")
    # "</script" inside a script would end it early; the minified builds never contain it.
    scripts = "\n".join(
        f'    <script type="text/javascript">{(vega_dir / name).read_text(encoding="utf-8")}'
        "</script>"
        for name in SCRIPTS
    )
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(PAGE.format(inline_scripts=scripts), encoding="utf-8")
    tmp.replace(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__.strip().splitlines()[-1])
    main(Path(sys.argv[1]), Path(sys.argv[2]))
