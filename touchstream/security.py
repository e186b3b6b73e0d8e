"""Secrets and transport security: settings read from files (TOUCHSTREAM_<NAME>_FILE),
the ClickHouse password and CA merged into its URL, and the Kafka client options (TLS,
SASL) for kafka-python and for Faust (aiokafka)."""

from __future__ import annotations

import json
import os
import ssl
import types
import typing
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlparse, urlunparse

from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource

if TYPE_CHECKING:
    from touchstream.config import Settings

ENV_PREFIX = "TOUCHSTREAM_"


class ConfigError(RuntimeError):
    """A security setting that cannot be used (an unreadable TOUCHSTREAM_*_FILE, a conflict):
    raised past pydantic (not a ValueError), its message is the one line to show."""


def read_secret_file(variable: str, path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(
            f"cannot read {variable}={path} ({reason}): point it at a readable file "
            "that holds the value"
        ) from e
    return text.removesuffix("\n").removesuffix("\r")


def _is_json(annotation: Any) -> bool:
    """A list or dict setting (possibly Optional): its value is JSON, as in the environment."""
    args = (
        typing.get_args(annotation)
        if typing.get_origin(annotation) in (typing.Union, types.UnionType)
        else (annotation,)
    )
    return any(typing.get_origin(a) in (list, dict) or a in (list, dict) for a in args)


class SecretFilesSource(PydanticBaseSettingsSource):
    """Every setting NAME can come from the file named by TOUCHSTREAM_NAME_FILE (Docker
    secrets, Kubernetes secret volumes): the file's content, less a trailing newline."""

    def __init__(self, settings_cls: type[Any], environ: dict[str, str] | None = None) -> None:
        super().__init__(settings_cls)
        env = os.environ if environ is None else environ
        self.environ = {k.upper(): v for k, v in env.items()}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        variable = f"{ENV_PREFIX}{field_name.upper()}_FILE"
        path = self.environ.get(variable)
        if path is None:
            return None, field_name, False
        direct = f"{ENV_PREFIX}{field_name.upper()}"
        if direct in self.environ:
            raise ConfigError(f"both {direct} and {variable} are set: set only one")
        return read_secret_file(variable, path), field_name, _is_json(field.annotation)

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, complex_ = self.get_field_value(field, name)
            if value is None:
                continue
            if complex_:
                try:
                    value = json.loads(value)
                except ValueError as e:
                    raise ConfigError(
                        f"{ENV_PREFIX}{name.upper()}_FILE: the file does not hold JSON ({e})"
                    ) from e
            out[key] = value
        return out


# ---- ClickHouse -------------------------------------------------------------------------


def clickhouse_url_with(url: str, password: str | None, ca_file: str | None) -> str:
    """The URL with TOUCHSTREAM_CLICKHOUSE_PASSWORD and _CA_FILE put in (a password left
    out of the URL; the CA as ``ca_certs``, which only clickhouses:// uses)."""
    u = urlparse(url)
    if u.scheme not in ("clickhouse", "clickhouses"):
        return url
    netloc = u.netloc
    if password is not None:
        if u.password:
            raise ConfigError(
                "the ClickHouse password is in TOUCHSTREAM_CLICKHOUSE_URL and in "
                "TOUCHSTREAM_CLICKHOUSE_PASSWORD(_FILE): give it only once"
            )
        user = unquote(u.username) if u.username else "default"
        host = netloc.rpartition("@")[2]
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    query = u.query
    if ca_file:
        if u.scheme != "clickhouses":
            raise ConfigError(
                "TOUCHSTREAM_CLICKHOUSE_CA_FILE is set but TOUCHSTREAM_CLICKHOUSE_URL is not "
                "clickhouses:// (TLS): use clickhouses://user@host:9440/db"
            )
        query = urlencode([*parse_qsl(u.query), ("ca_certs", ca_file)])
    return urlunparse(u._replace(netloc=netloc, query=query))


# ---- Kafka ------------------------------------------------------------------------------


def ssl_context(s: Settings) -> ssl.SSLContext | None:
    """The TLS context of the Kafka clients (None for PLAINTEXT and SASL_PLAINTEXT):
    verifies the broker against TOUCHSTREAM_KAFKA_SSL_CAFILE, else the system CAs, and
    presents a client certificate when _CERTFILE (and _KEYFILE) are set."""
    if s.kafka_security_protocol not in ("SSL", "SASL_SSL"):
        return None
    try:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=s.kafka_ssl_cafile)
        if s.kafka_ssl_certfile:
            ctx.load_cert_chain(s.kafka_ssl_certfile, s.kafka_ssl_keyfile)
    except (OSError, ssl.SSLError) as e:
        raise ConfigError(
            f"cannot load the Kafka TLS files (TOUCHSTREAM_KAFKA_SSL_CAFILE / _CERTFILE / "
            f"_KEYFILE): {e}"
        ) from e
    return ctx


def _check_sasl(s: Settings) -> None:
    if s.kafka_sasl_username is None or s.kafka_sasl_password is None:
        raise ConfigError(
            f"TOUCHSTREAM_KAFKA_SECURITY_PROTOCOL={s.kafka_security_protocol} needs "
            "TOUCHSTREAM_KAFKA_SASL_USERNAME and TOUCHSTREAM_KAFKA_SASL_PASSWORD(_FILE)"
        )


def kafka_options(s: Settings) -> dict[str, Any]:
    """kafka-python client options; empty for PLAINTEXT (the clients' defaults)."""
    protocol = s.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security_protocol": protocol}
    ctx = ssl_context(s)
    if ctx is not None:
        out["ssl_context"] = ctx
    if protocol.startswith("SASL_"):
        _check_sasl(s)
        out["sasl_mechanism"] = s.kafka_sasl_mechanism
        out["sasl_plain_username"] = s.kafka_sasl_username
        out["sasl_plain_password"] = s.kafka_sasl_password
    return out


def faust_credentials(s: Settings) -> Any:
    """``broker_credentials`` for the Faust app (None for PLAINTEXT)."""
    import faust

    protocol = s.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    ctx = ssl_context(s)
    if protocol == "SSL":
        return faust.SSLCredentials(ctx)
    _check_sasl(s)
    return faust.SASLCredentials(
        username=s.kafka_sasl_username,
        password=s.kafka_sasl_password,
        mechanism=s.kafka_sasl_mechanism,
        ssl_context=ctx,
    )
