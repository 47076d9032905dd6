"""Write SST-5 sentences as {text, label} rows for the sweep example, spread evenly over the file
(it is ordered: its first lines are mostly positive):

    python examples/sweep/sst5.py /path/to/sst5_train.txt 500
"""

import json
import sys
from pathlib import Path

source, rows = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 500
lines = source.read_text().splitlines()
step = max(1, len(lines) // rows)
out = Path(__file__).with_name("sst5.jsonl")
with out.open("w") as f:
    for line in lines[::step][:rows]:
        label, _, text = line.partition("\t")
        f.write(json.dumps({"text": text, "label": label.replace("__label__", "")}) + "\n")
print(f"wrote {min(rows, len(lines[::step]))} rows to {out}")
