"""Serve this bundle with numpy and onnxruntime only:  python client.py IMAGES.npy [fp32|int8]

IMAGES.npy holds uint8 images, N x H x W x C as bundle.json's "input" says. Every output is computed inside
the ONNX graph (calibrated probabilities, the accept rule, the conformal prediction set): nothing else to apply.
bf16, where the bundle has it, runs on OpenVINO only (onnxruntime has no bf16 CPU kernels): README.md shows how.
"""

import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent


def load(precision="fp32"):
    doc = json.loads((HERE / "bundle.json").read_text())
    if precision not in doc["models"]:
        raise SystemExit(f"this bundle has no {precision}: {doc.get('absent', {}).get(precision, 'not written')}")
    model = doc["models"][precision]
    if "onnxruntime" not in model.get("runtimes", ["onnxruntime"]):
        raise SystemExit(f"{precision} is {model.get('runs_as', 'not served by onnxruntime')}; README.md shows how")
    return doc, ort.InferenceSession(str(HERE / model["file"]), providers=["CPUExecutionProvider"])


def predict(doc, session, images):
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.shape[1:] != tuple(doc["input"]["shape"][1:]):
        raise ValueError(f"need uint8 images N x {doc['input']['shape'][1:]}, got {images.dtype} {images.shape}")
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(None, {doc["input"]["name"]: images.astype(np.float32)})))


if __name__ == "__main__":
    doc, session = load(sys.argv[2] if len(sys.argv) > 2 else "fp32")
    out = predict(doc, session, np.load(sys.argv[1]))
    classes = doc["class_names"]
    for i, probs in enumerate(out["probabilities"]):
        top = int(probs.argmax())
        members = [classes[j] for j in np.flatnonzero(out["prediction_set"][i])] if "prediction_set" in out else []
        print(f"{i}: {classes[top]} p={probs[top]:.3f} {'accept' if out['accept'][i] else 'reject'} set={members}")
