"""notified-sa: durable, SQLAlchemy-native events over PostgreSQL LISTEN/NOTIFY."""

from __future__ import annotations

from .admin import create_group, drop_group, list_groups, purge, requeue, table_status
from .client import NotifyClient
from .config import NotifiedConfig
from .ddl import NotifyTrigger, NotifyTriggerDDL, notify_trigger_ddl
from .drain import DrainedEvent
from .errors import ConfigError, InvalidIdentifierError, NotifiedError, PayloadError, SchemaError, ServerError
from .handlers import HandlerResult, HandlerStatus
from .models import EventMixin, EventStatus
from .publish import publish_many
from .server import Server
from .triggers import install_notify_trigger, remove_notify_trigger

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DrainedEvent",
    "EventMixin",
    "EventStatus",
    "HandlerResult",
    "HandlerStatus",
    "InvalidIdentifierError",
    "NotifiedConfig",
    "NotifiedError",
    "NotifyClient",
    "NotifyTrigger",
    "NotifyTriggerDDL",
    "PayloadError",
    "SchemaError",
    "Server",
    "ServerError",
    "__version__",
    "create_group",
    "drop_group",
    "install_notify_trigger",
    "list_groups",
    "notify_trigger_ddl",
    "publish_many",
    "purge",
    "remove_notify_trigger",
    "requeue",
    "table_status",
]
