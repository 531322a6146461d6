"""Re-encode the figures stored in executed notebooks as 256-colour PNGs, a third of their size.

Run after executing a notebook (see tests/test_notebooks.py): ``python notebooks/shrink_figures.py
notebooks/NAME.ipynb ...``. Plots have far fewer than 256 colours, so they look the same; a figure
that would grow is left as it was.
"""

import base64
import io
import json
import sys

from PIL import Image


def shrink(path):
    with open(path) as file:
        notebook = json.load(file)
    for cell in notebook["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "image/png" in data:
                image = Image.open(io.BytesIO(base64.b64decode(data["image/png"]))).convert("RGB")
                buffer = io.BytesIO()
                image.quantize(256, Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(buffer, "PNG",
                                                                                             optimize=True)
                encoded = base64.b64encode(buffer.getvalue()).decode()
                if len(encoded) < len(data["image/png"]):
                    data["image/png"] = encoded
    with open(path, "w") as file:
        json.dump(notebook, file, indent=1, ensure_ascii=False)
        file.write("\n")


if __name__ == "__main__":
    for name in sys.argv[1:]:
        shrink(name)
