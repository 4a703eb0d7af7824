"""Runs the code block of README.md's "dalle-flow's client code, unchanged" section: dalle-flow's
own README client code (jina-ai/dalle-flow, README.md, "Client", 2022) as it was, but for
server_url, which there named dalle-flow's public server (grpcs://dalle-flow.dev.jina.ai).

It runs in the separate venv that `scripts/setup.sh test` makes (.venv-jina: jina 3.34,
docarray[common] 0.21.1, pydantic 1, IPython for `display`), as dalle-flow's users ran it:

    .venv-jina/bin/python tests/service/dalle_flow_readme.py http://127.0.0.1:8000

tests/service/test_jina_compat.py runs it against the test session's service and reads
the JSON line it prints last: what the code's variables hold at the end.
"""

import json
import re
import sys
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
DEFAULT_URL = "'http://127.0.0.1:8000'"

section = README.read_text().split("## dalle-flow's client code", 1)[1].split("\n## ", 1)[0]
[code] = re.findall(r"```python\n(.*?)```", section, flags=re.S)
assert f"server_url = {DEFAULT_URL}" in code
names: dict = {}
exec(compile(code.replace(DEFAULT_URL, repr(sys.argv[1])), "README.md", "exec"), names)

doc, da, diffused, fav = names["doc"], names["da"], names["diffused"], names["fav"]
pick, picked = da[names["fav_id"]], diffused[names["dfav_id"]]
print(json.dumps({
    "doc": {"id": doc.id, "text": doc.text, "embedding_size": len(doc.embedding)},
    "candidates": [{"id": d.id, "uri": d.uri, "tags": d.tags, "clip_score": d.scores["clip_score"].value} for d in da],
    "pick": {"id": pick.id, "uri": pick.uri},
    "variations": [{"id": d.id, "text": d.text, "tags": d.tags, "clip_score": d.scores["clip_score"].value} for d in diffused],
    "variation_pick": {"id": picked.id, "uri": picked.uri},
    "upscaled": {"id": fav.id, "uri": fav.uri, "tags": fav.tags, "text": fav.text},
}))
