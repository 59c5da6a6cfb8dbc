"""The README's picture of the `--serve` page: a real run, photographed by headless chromium.

    python scripts/screenshot_preview.py [--out docs/web/preview.png] [--wait 8]
    python scripts/screenshot_preview.py --rules rules.toml --height 1150 --colours 128 --wait 25 \
        --out docs/page-decisions.png   # the page with the decisions stage (timeline, charts, events)

Two streams, the sample clip and the same photographs in another order (paced like cameras, looped),
EfficientNet-Lite0 with its real
weights on ONNX Runtime; the page is shot after `--wait` seconds of running, then the run is stopped
with Ctrl-C as a user would.
"""

from __future__ import annotations

import argparse
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from stream.media.sample import make_clip, sample_clip  # noqa: E402
from tests.browser import MISSING, open_chromium  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "web" / "preview.png"))
    parser.add_argument("--wait", type=float, default=8.0)
    parser.add_argument("--rules", help="a rules file: the page shows its timelines, charts and events")
    parser.add_argument("--height", type=int, default=720)
    parser.add_argument("--colours", type=int, help="a palette of this many colours (a smaller file)")
    args = parser.parse_args()
    if MISSING:
        raise SystemExit(MISSING)
    with tempfile.TemporaryDirectory() as folder:
        door, yard = sample_clip(), make_clip(Path(folder) / "yard.mp4", images=("chelsea", "rocket", "coffee"))
        sources = Path(folder) / "cameras.toml"
        sources.write_text(f'[[source]]\nuri = "{door}"\nname = "door"\n\n[[source]]\nuri = "{yard}"\nname = "yard"\n')
        rules = ["--rules", str(Path(args.rules).resolve())] if args.rules else []
        run = subprocess.Popen([sys.executable, str(ROOT / "run_stream.py"), "--sources", str(sources), "--pace",
                                "--loop", "--model", "efficientnet_lite0", "--backend", "onnxruntime", "--no-display",
                                "--serve", "127.0.0.1:0", *rules],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
        try:
            url = next(m.group(1) for line in run.stdout if (m := re.search(r"serving (http://\S+/)", line)))
            browser = open_chromium(Path(folder) / "profile", 1300, args.height)
            try:
                browser.get(url)
                time.sleep(args.wait)
                Path(args.out).parent.mkdir(parents=True, exist_ok=True)
                browser.save_screenshot(args.out)
                if args.colours:
                    from PIL import Image

                    Image.open(args.out).convert("RGB").quantize(args.colours).save(args.out, optimize=True)
            finally:
                browser.quit()
        finally:
            run.send_signal(signal.SIGINT)
            run.communicate(timeout=60)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
