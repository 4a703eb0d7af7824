"""dalle-flow's README client code (jina-ai/dalle-flow, README.md, "Client", 2022), unchanged
but for server_url, which the README set to its public server (grpcs://dalle-flow.dev.jina.ai).

It runs in the separate venv that `scripts/setup.sh test` makes (.venv-jina: jina 3.34,
docarray[common] 0.21.1, pydantic 1, IPython for `display`), as dalle-flow's users ran it:

    .venv-jina/bin/python tests/service/dalle_flow_readme.py http://127.0.0.1:8000

tests/service/test_jina_compat.py runs it against the test session's service and reads
the JSON line it prints last: what the README's variables hold at the end.
"""

import json
import sys

server_url = sys.argv[1]

# __readme_start__
prompt = 'an oil painting of a humanoid robot playing chess in the style of Matisse'

from docarray import Document

doc = Document(text=prompt).post(server_url, parameters={'num_images': 8})
da = doc.matches

da.plot_image_sprites(fig_size=(10,10), show_index=True)

fav_id = 3
fav = da[fav_id]
fav.embedding = doc.embedding
fav.display()

diffused = fav.post(f'{server_url}', parameters={'skip_rate': 0.5, 'num_images': 36}, target_executor='diffusion').matches

diffused.plot_image_sprites(fig_size=(10,10), show_index=True)

dfav_id = 34
fav = diffused[dfav_id]
fav.display()

fav = fav.post(f'{server_url}/upscale')
fav.display()
# __readme_end__

picked = diffused[dfav_id]
print(json.dumps({
    "doc": {"id": doc.id, "text": doc.text, "embedding_size": len(doc.embedding)},
    "candidates": [{"id": d.id, "uri": d.uri, "tags": d.tags, "clip_score": d.scores["clip_score"].value} for d in da],
    "pick": {"id": da[fav_id].id, "uri": da[fav_id].uri},
    "variations": [{"id": d.id, "text": d.text, "tags": d.tags, "clip_score": d.scores["clip_score"].value} for d in diffused],
    "variation_pick": {"id": picked.id, "uri": picked.uri},
    "upscaled": {"id": fav.id, "uri": fav.uri, "tags": fav.tags, "text": fav.text},
}))
