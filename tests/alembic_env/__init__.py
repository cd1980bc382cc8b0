"""Throwaway Alembic projects for the tests: ``alembic.ini``, this directory's ``env.py`` and template, versions."""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

from alembic.config import Config

TEMPLATE = Path(__file__).parent


class AlembicProject:
    """An Alembic project in ``root`` on the database at ``url``."""

    def __init__(self, root: Path, url: str, *, import_alembic_ext: bool = True) -> None:
        self.root = root
        self.url = url
        self.scripts = root / "migrations"
        self.versions = self.scripts / "versions"
        shutil.copytree(TEMPLATE, self.scripts, ignore=shutil.ignore_patterns("__init__.py", "__pycache__"))
        self.versions.mkdir()
        self.ini = root / "alembic.ini"
        self.ini.write_text(
            "[alembic]\n"
            f"script_location = {self.scripts}\n"
            f"sqlalchemy.url = {url.replace('%', '%%')}\n"
            f"import_alembic_ext = {'true' if import_alembic_ext else 'false'}\n"
        )
        self.output = io.StringIO()

    def config(self, **attributes: Any) -> Config:
        """A Config for ``alembic.command`` in this process; offline SQL goes to ``self.output``."""
        cfg = Config(str(self.ini), output_buffer=self.output, stdout=io.StringIO())
        cfg.attributes.update(attributes)
        return cfg

    def add_migration(
        self, revision: str, upgrade: str, downgrade: str, *, down_revision: str | None = None, imports: str = ""
    ) -> Path:
        """Write a hand-made migration; ``upgrade`` and ``downgrade`` are function bodies."""
        path = self.versions / f"{revision}.py"
        path.write_text(
            f"from alembic import op\nimport sqlalchemy as sa\n{imports}\n\n"
            f"revision = {revision!r}\ndown_revision = {down_revision!r}\nbranch_labels = None\ndepends_on = None\n\n\n"
            f"def upgrade():\n{textwrap.indent(textwrap.dedent(upgrade).strip(), '    ')}\n\n\n"
            f"def downgrade():\n{textwrap.indent(textwrap.dedent(downgrade).strip(), '    ')}\n"
        )
        return path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``alembic ARGS`` in a fresh interpreter (what a user's shell does); fail with its output."""
        proc = subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(self.ini), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert proc.returncode == 0, f"alembic {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc
