"""Mend the unpacked @ohif/app build (`make viewer` runs this on its dist folder before putting it in place).

    python3 deploy/ohif/patch.py DIST_FOLDER

OHIF 3.13.2 (the newest @ohif/app on npm) bundles a cornerstone3D whose StackViewport, when its next image is not
cached yet, moves to it from a 40 ms timer; a viewport torn down within those 40 ms — every stack viewport arms the
timer when it mounts, so opening a study on one series and showing another at once is enough — makes the timer call
``setImageIdIndex`` on a destroyed viewport, which throws "The stack viewport has been destroyed…" and OHIF's error
boundary blanks the viewer ("Something went wrong"). cornerstone3D fixed it after that release
(cornerstonejs/cornerstone3D#2884: the handler meant to cancel the timer on ELEMENT_DISABLED never did). Here the
timer does nothing once its viewport is disabled, the condition on which ``setImageIdIndex`` throws.

The page's bundle (app.bundle, loaded by index.html) is mended and renamed by its new content hash, and index.html
and sw.js's precache list name the new one: hashed bundles are served as immutable (node/web/viewer.py), so a
browser that cached the old one must not keep it. The other copy of that code (chunk 2493) is loaded only by the
compute and polySeg web workers, which draw no viewport, and is left as it is: renaming it would mean renaming the
worker bundles that name it too. Stdlib only: it runs before the venv exists. It fails, changing nothing, when the
page's bundle does not hold the code it mends exactly once — a new OHIF version is checked by hand, not patched
blindly.
"""

from __future__ import annotations

import hashlib
import re
import sys
from pathlib import Path

ISSUE = "cornerstonejs/cornerstone3D#2884"
BEFORE = """            this.debouncedTimeout = window.setTimeout(() => {
                this.setImageIdIndex(newTargetImageIdIndex);
            }, 40);"""
AFTER = f"""            this.debouncedTimeout = window.setTimeout(() => {{
                if (this.isDisabled) return; // myonode, deploy/ohif/patch.py: {ISSUE}
                this.setImageIdIndex(newTargetImageIdIndex);
            }}, 40);"""
HASHED_NAME = re.compile(r"^(?P<stem>.+\.)(?P<hash>[0-9a-f]{16})\.js$")


def patch(dist: Path) -> tuple[str, str] | None:
    """Mend the page's bundle of ``dist``; returns (old name, new name), or None when it is mended already."""
    pages = sorted(dist.glob("app.bundle.*.js"))
    if len(pages) != 1 or not (dist / "index.html").is_file():
        raise SystemExit(f"{dist}: expected index.html and one app.bundle.<hash>.js, found {[p.name for p in pages]}")
    page = pages[0]
    text = page.read_text(encoding="utf-8")
    if AFTER in text:
        return None  # a rerun on the same folder
    match = HASHED_NAME.match(page.name)
    if text.count(BEFORE) != 1 or match is None:
        raise SystemExit(f"{page}: StackViewport's scroll timer as OHIF 3.13.2 has it found {text.count(BEFORE)} "
                         f"times (expected once): check whether {ISSUE} is in this OHIF version and update "
                         "deploy/ohif/patch.py; nothing changed")
    new_text = text.replace(BEFORE, AFTER)
    new_name = f"{match['stem']}{hashlib.sha256(new_text.encode()).hexdigest()[:16]}.js"
    referrers = [path for path in (dist / "index.html", dist / "sw.js") if path.is_file()]
    if page.name not in referrers[0].read_text(encoding="utf-8"):
        raise SystemExit(f"{dist / 'index.html'} does not load {page.name}; nothing changed")
    (dist / new_name).write_text(new_text, encoding="utf-8")
    for path in referrers:  # neither is served as immutable: a browser reads them again
        path.write_text(path.read_text(encoding="utf-8").replace(page.name, new_name), encoding="utf-8")
    page.unlink()
    return page.name, new_name


def main() -> None:
    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        raise SystemExit("usage: python3 deploy/ohif/patch.py DIST_FOLDER")
    done = patch(Path(sys.argv[1]))
    if done is not None:
        old, new = done
        print(f"OHIF: {old} -> {new} (the stack viewport's scroll timer stops with its viewport, {ISSUE})")


if __name__ == "__main__":
    main()
