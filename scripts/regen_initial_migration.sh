#!/usr/bin/env bash
# Until the first release there is one migration, regenerated from infra/tables.py after a schema change.
# After the first release: add new revisions with `alembic revision --autogenerate` instead.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
rm -f infra/migrations/versions/0001_initial.py
.venv/bin/python - "$tmp" <<'PY'
import sys
from alembic import command
from infra.migrate import alembic_config
cfg = alembic_config(f"sqlite+aiosqlite:///{sys.argv[1]}/gen.db")
command.revision(cfg, message="initial schema", autogenerate=True, rev_id="0001")
PY
mv infra/migrations/versions/0001_initial_schema.py infra/migrations/versions/0001_initial.py
.venv/bin/ruff check -q --fix infra/migrations/versions/0001_initial.py || true
.venv/bin/ruff format -q infra/migrations/versions/0001_initial.py || true
rm -rf "$tmp"
