"""Write the SST-5 sentences of ../shared/data/sst5_train.txt as {text, label} rows for the
sweep example: python examples/sweep/sst5.py /work/shared/data/sst5_train.txt 1000"""

import json
import sys
from pathlib import Path

source, rows = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 1000
out = Path(__file__).with_name("sst5.jsonl")
with out.open("w") as f:
    for line in source.read_text().splitlines()[:rows]:
        label, _, text = line.partition("\t")
        f.write(json.dumps({"text": text, "label": label.replace("__label__", "")}) + "\n")
print(f"wrote {rows} rows to {out}")
