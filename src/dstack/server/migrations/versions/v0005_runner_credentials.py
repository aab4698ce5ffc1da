"""Runner credentials: each registered runner gets its own token (stored hashed), and the
server an id of its own that runners label their containers with.

Revision ID: 0005
Revises: 0004
Create Date: 2023-05-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("runners") as batch:
        batch.add_column(sa.Column("token_hash", sa.String(64)))
        batch.create_index("ix_runners_token_hash", ["token_hash"], unique=True)
    op.create_table(
        "server_meta",
        sa.Column("key", sa.String(100), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("server_meta")
    with op.batch_alter_table("runners") as batch:
        batch.drop_index("ix_runners_token_hash")
        batch.drop_column("token_hash")
