"""notified-sa: durable, SQLAlchemy-native events over PostgreSQL LISTEN/NOTIFY."""

from __future__ import annotations

from .config import NotifiedConfig
from .ddl import NotifyTrigger, NotifyTriggerDDL, notify_trigger_ddl
from .errors import ConfigError, InvalidIdentifierError, NotifiedError, PayloadError, SchemaError
from .handlers import HandlerResult, HandlerStatus
from .models import EventMixin, EventStatus

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "EventMixin",
    "EventStatus",
    "HandlerResult",
    "HandlerStatus",
    "InvalidIdentifierError",
    "NotifiedConfig",
    "NotifiedError",
    "NotifyTrigger",
    "NotifyTriggerDDL",
    "PayloadError",
    "SchemaError",
    "__version__",
    "notify_trigger_ddl",
]
