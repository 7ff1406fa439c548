"""The seed's serving pattern, rebuilt for River, to compare ``bench/http_load.py`` against:
FastAPI with a pydantic body, a model loaded once from a pickle (joblib is pickle; it is not
installed here), ``predict_proba_one`` on the event's own numbers. No feature lookup, no key
check, no snapshot, no Kafka.

    python bench/seed_http.py MODEL.pkl PORT
"""

from __future__ import annotations

import pickle
import sys

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Event(BaseModel):
    event_id: str
    entity_id: str
    timestamp: float
    features: dict[str, float | str | bool | None]


def build(model_path: str) -> FastAPI:
    with open(model_path, "rb") as fh:
        model = pickle.load(fh)  # noqa: S301 (the bench's own file)
    app = FastAPI()

    @app.post("/predict")
    async def predict(event: Event) -> dict[str, object]:
        x = {k: float(v) for k, v in event.features.items() if type(v) in (int, float)}
        score = model.predict_proba_one(x).get(True, 0.0)
        return {"event_id": event.event_id, "score": score, "predicted": score >= 0.5}

    return app


if __name__ == "__main__":
    uvicorn.run(build(sys.argv[1]), host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                access_log=False)
