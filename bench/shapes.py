"""Workload shapes: the benchmark table's columns and how each row's values are generated.

`narrow` (5 columns) is the table every result so far was measured on; `wide` (30 columns of the
common types, with one JSON document) shows what a row's width costs: decoding, converting and
encoding grow with the columns, the per-event overhead does not. Each column is a name, its type
in PostgreSQL and in MariaDB, and a SQL expression of the row number `n` in each dialect, so both
servers generate the same values themselves (`generate_series`, the sequence engine) and the
writer is never the slow part.
"""

from __future__ import annotations

from dataclasses import dataclass

TABLE = "bench_rows"
NUMBER = "{n}"  # the row number in an expression: `g` in PostgreSQL, `seq` in MariaDB


@dataclass(frozen=True)
class Column:
    name: str
    pg_type: str
    pg_value: str
    mysql_type: str
    mysql_value: str


def _same(name: str, pg_type: str, mysql_type: str, value: str) -> Column:
    """A column whose value is written alike in both dialects."""
    return Column(name, pg_type, value, mysql_type, value)


_ID = _same("id", "bigint", "bigint", NUMBER)

NARROW = (
    _ID,
    _same("qty", "int NOT NULL", "int NOT NULL", "{n} % 1000"),
    Column("note", "text", "'note ' || md5({n}::text)", "varchar(255)", "CONCAT('note ', MD5({n}))"),
    Column(
        "amount",
        "numeric(12, 2)",
        "(({n} % 1000000) / 100.0)::numeric(12, 2)",
        "decimal(12, 2)",
        "({n} % 1000000) / 100",
    ),
    Column(
        "created_at",
        "timestamptz",
        "timestamptz '2024-01-01 00:00:00+00' + {n} * interval '1 second'",
        "timestamp(6) NULL",
        "TIMESTAMP '2024-01-01 00:00:00' + INTERVAL {n} SECOND",
    ),
)

_JSON_PG = (
    "jsonb_build_object('n', {n}, 'kind', 'k' || ({n} % 7), 'tags', jsonb_build_array('a', 'b', {n} % 3), "
    "'nested', jsonb_build_object('x', {n} % 100, 'ok', {n} % 2 = 0))"
)
_JSON_MYSQL = (
    "JSON_OBJECT('n', {n}, 'kind', CONCAT('k', {n} % 7), 'tags', JSON_ARRAY('a', 'b', {n} % 3), "
    "'nested', JSON_OBJECT('x', {n} % 100, 'ok', {n} % 2 = 0))"
)

WIDE = (
    *NARROW,
    _same("small", "smallint", "smallint", "{n} % 30000"),
    _same("big", "bigint", "bigint", "{n} * 1000003"),
    _same("flag", "boolean", "boolean", "{n} % 2 = 0"),
    Column("ratio", "double precision", "{n} / 7.0", "double", "{n} / 7e0"),  # 7e0: MariaDB divides as DOUBLE
    _same("score", "real", "float", "({n} % 1000) / 3.0"),
    Column("price", "numeric(18, 6)", "({n} / 1000.0)::numeric(18, 6)", "decimal(18, 6)", "{n} / 1000"),
    Column("name", "varchar(64)", "'name-' || {n}", "varchar(64)", "CONCAT('name-', {n})"),
    Column("code", "char(8)", "lpad(({n} % 100000)::text, 8, '0')", "char(8)", "LPAD({n} % 100000, 8, '0')"),
    Column("description", "text", "repeat(md5({n}::text), 3)", "text", "REPEAT(MD5({n}), 3)"),
    Column(
        "email",
        "varchar(128)",
        "'user' || {n} || '@example.com'",
        "varchar(128)",
        "CONCAT('user', {n}, '@example.com')",
    ),
    Column(
        "status",
        "varchar(16)",
        "(ARRAY['new', 'paid', 'shipped'])[({n} % 3)::int + 1]",
        "varchar(16)",
        "ELT({n} % 3 + 1, 'new', 'paid', 'shipped')",
    ),
    Column(
        "updated_at",
        "timestamptz",
        "timestamptz '2024-06-01 00:00:00+00' + {n} * interval '1 millisecond'",
        "timestamp(6) NULL",
        "TIMESTAMP '2024-06-01 00:00:00' + INTERVAL ({n} * 1000) MICROSECOND",
    ),
    Column(
        "local_at",
        "timestamp",
        "timestamp '2024-01-01 00:00:00' + {n} * interval '1 minute'",
        "datetime(6)",
        "TIMESTAMP '2024-01-01 00:00:00' + INTERVAL {n} MINUTE",
    ),
    Column(
        "day",
        "date",
        "date '2020-01-01' + ({n} % 3650)::int",
        "date",
        "DATE '2020-01-01' + INTERVAL ({n} % 3650) DAY",
    ),
    Column(
        "at_time",
        "time",
        "time '00:00:00' + ({n} % 86400) * interval '1 second'",
        "time(6)",
        "SEC_TO_TIME({n} % 86400)",
    ),
    Column(
        "ref",
        "uuid",
        "md5('ref' || {n})::uuid",
        "char(36)",
        "INSERT(INSERT(INSERT(INSERT(MD5(CONCAT('ref', {n})), 21, 0, '-'), 17, 0, '-'), 13, 0, '-'), 9, 0, '-')",
    ),
    Column("payload", "bytea", "decode(md5({n}::text), 'hex')", "varbinary(64)", "UNHEX(MD5({n}))"),
    Column("attrs", "jsonb", _JSON_PG, "json", _JSON_MYSQL),
    _same("counter", "bigint", "bigint", "{n} % 1000000007"),
    _same("rank", "int", "int", "{n} % 5000"),
    _same("level", "smallint", "smallint", "{n} % 10"),
    _same("active", "boolean", "boolean", "{n} % 3 <> 0"),
    _same("weight", "double precision", "double", "{n} * 0.25"),
    Column("tag", "varchar(32)", "'tag' || ({n} % 50)", "varchar(32)", "CONCAT('tag', {n} % 50)"),
    Column(
        "remark",
        "text",
        "CASE WHEN {n} % 2 = 0 THEN NULL ELSE 'remark ' || {n} END",
        "text",
        "IF({n} % 2 = 0, NULL, CONCAT('remark ', {n}))",
    ),
)

SHAPES: dict[str, tuple[Column, ...]] = {"narrow": NARROW, "wide": WIDE}


@dataclass(frozen=True)
class Shape:
    """One shape in one dialect: the table's DDL and the INSERT of one range of row numbers."""

    name: str
    columns: tuple[Column, ...]
    mysql: bool

    @classmethod
    def of(cls, name: str, *, mysql: bool) -> Shape:
        return cls(name, SHAPES[name], mysql)

    def _type(self, column: Column) -> str:
        return column.mysql_type if self.mysql else column.pg_type

    def create_table(self) -> str:
        columns = ",\n    ".join(f"{column.name} {self._type(column)}" for column in self.columns)
        return f"CREATE TABLE {TABLE} (\n    {columns},\n    PRIMARY KEY (id)\n)"

    def insert(self, *, number: str, source: str) -> str:
        """`INSERT ... SELECT` over `source`, in which the row number is called `number`."""
        names = ", ".join(column.name for column in self.columns)
        values = ",\n       ".join(
            (column.mysql_value if self.mysql else column.pg_value).replace(NUMBER, number)
            for column in self.columns
        )
        return f"INSERT INTO {TABLE} ({names})\nSELECT {values}\nFROM {source}"

    def described(self) -> list[str]:
        """The columns as the JSON results list them: `name type`."""
        return [f"{column.name} {self._type(column)}" for column in self.columns]
