"""`python -m deltaforge.reclaim MANIFEST`: drop a deleted Pipeline's replication slot and publication.

The operator's cleanup Job runs it when a Pipeline with `slot.reclaimPolicy: Delete` is deleted
and its worker has stopped. It connects exactly as the worker would (the same manifest, the same
credentials from the same mounted Secrets, the source's own connection settings), so what the
worker could create, it can drop. The publication is dropped only when the Pipeline manages it
(`publication.create: true`) and the pipeline's role owns it; one someone else created stays.

Idempotent, so a retried Job is harmless: a slot or publication that is gone already counts as
dropped. A slot still in use is refused, not taken: the worker stops first, and a slot that
another process holds is not ours to break. Exit 0 says what was dropped; exit 1 says why not, in
the last line of output, which becomes the pod's termination message and the operator's Event.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

import psycopg
from psycopg import sql

from deltaforge.assembly import Secrets, build_source
from deltaforge.observability.metrics import PipelineMetrics
from deltaforge.sources.errors import SourceConfigError, SourceUnavailable
from deltaforge.sources.postgres.connection import PostgresSettings, connect, translate
from deltaforge.sources.postgres.source import PostgresSource
from deltaforge.spec import Pipeline, SpecError, load_manifest_file

STATEMENT_TIMEOUT = "30s"  # no statement may keep a cleanup Job waiting longer than this


class ReclaimError(Exception):
    """The slot or publication could not be dropped; the message says why and names them."""


async def reclaim(pipeline: Pipeline, secrets: Secrets) -> str:
    """Drop the slot (and a managed publication); returns what was done, for the Job's log."""
    if pipeline.spec.source.postgres is None:
        return "nothing to reclaim: only a PostgreSQL source has a replication slot"
    source = build_source(
        pipeline, None, PipelineMetrics(pipeline.name, tenant=pipeline.tenant, source="postgres"), secrets,
        lambda *_args, **_fields: None,
    )  # fmt: skip
    assert isinstance(source, PostgresSource)
    config = source.config
    try:
        return await _drop(
            config.settings, config.slot, config.publication if config.create_publication else None
        )
    except psycopg.Error as error:
        raise translate(error, config.settings) from error


async def _drop(settings: PostgresSettings, slot: str, publication: str | None) -> str:
    where = settings.where
    connection = await connect(settings)
    async with connection:
        await connection.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(STATEMENT_TIMEOUT)))
        found = await (
            await connection.execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", [slot]
            )
        ).fetchone()
        if found is not None and found[0] is not None:
            raise ReclaimError(
                f"the replication slot '{slot}' at {where} is in use by process {found[0]}; "
                "stop whatever reads it, the cleanup is retried"
            )
        done = []
        if found is not None:
            await connection.execute("SELECT pg_drop_replication_slot(%s)", [slot])
            done.append(f"dropped the replication slot '{slot}'")
        else:
            done.append(f"the replication slot '{slot}' was gone already")
        if publication is not None:
            done.append(await _drop_publication(connection, publication))
    return f"{'; '.join(done)} at {where}"


async def _drop_publication(connection: psycopg.AsyncConnection[tuple[object, ...]], publication: str) -> str:
    """Only one the pipeline's role owns, which is one its worker created: a publication that
    existed before (`create: true` also adopts one) belongs to whoever made it."""
    found = await (
        await connection.execute(
            "SELECT pg_get_userbyid(pubowner) = current_user FROM pg_publication WHERE pubname = %s",
            [publication],
        )
    ).fetchone()
    if found is None:
        return f"the publication '{publication}' was gone already"
    if not found[0]:
        return f"kept the publication '{publication}': another role owns it"
    await connection.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(publication)))
    return f"dropped the publication '{publication}'"


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if len(arguments) != 1:
        print("usage: python -m deltaforge.reclaim MANIFEST", file=sys.stderr)
        return 2
    try:
        pipeline = load_manifest_file(arguments[0])
    except SpecError as error:
        print(f"{arguments[0]} is not a valid Pipeline:\n{error}", file=sys.stderr)
        return 1
    try:
        print(asyncio.run(reclaim(pipeline, Secrets())))
    except (
        ReclaimError,
        SourceConfigError,
        SourceUnavailable,
        SpecError,
    ) as error:  # SpecError: a credential
        print(f"cleanup failed: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
