"""Configuration from the environment (prefix CRMBOT_) and an optional crmbot.toml."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)


class Settings(BaseSettings):
    """Every knob crmbot reads; nothing else reads the environment."""

    model_config = SettingsConfigDict(
        env_prefix="CRMBOT_",
        toml_file="crmbot.toml",
        extra="ignore",
        case_sensitive=False,
    )

    database_url: str = "sqlite+aiosqlite:///./crmbot.db"
    data_dir: Path = Path("./var")
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    api_token: SecretStr | None = None

    telegram_token: SecretStr | None = None
    telegram_api_url: str | None = None
    telegram_webhook_url: str | None = None
    telegram_webhook_secret: SecretStr | None = None

    slack_bot_token: SecretStr | None = None
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: str | None = None

    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = True
    # Implicit TLS from the first byte (port 465); STARTTLS is the usual choice on 587.
    smtp_tls: bool = False
    smtp_pool_size: int = Field(default=3, ge=1, le=20)
    smtp_timeout: float = Field(default=30.0, gt=0)
    mail_from: str = "crmbot <crmbot@localhost>"
    mail_dir: Path | None = None

    sms_provider: Literal["twilio", "http", "file"] = "file"
    sms_dir: Path | None = None
    # twilio: the API base (https://api.twilio.com or a compatible provider); http: the gateway's URL.
    sms_url: str | None = None
    sms_account_sid: str | None = None
    sms_auth_token: SecretStr | None = None
    sms_from: str | None = None
    # The generic HTTP gateway: method, and a Jinja2 body template given {to, text, sender, dedupe_key}
    # (JSON-escaped with the `tojson` filter).
    sms_method: Literal["POST", "PUT", "GET"] = "POST"
    sms_body_template: str = '{"to": {{ to|tojson }}, "text": {{ text|tojson }}, "from": {{ sender|tojson }}}'
    sms_content_type: str = "application/json"
    sms_timeout: float = Field(default=10.0, gt=0)

    # The notifier: quiet hours (local time of the recipient, "HH:MM-HH:MM", empty for none) for people
    # with no preference of their own; retries; how long a worker's claim on a message lasts.
    quiet_hours: str = "21:00-08:00"
    notify_max_attempts: int = Field(default=8, ge=1, le=50)
    notify_retry_base: float = Field(default=30.0, gt=0)
    notify_retry_cap: float = Field(default=3600.0, gt=0)
    notify_lease: float = Field(default=300.0, gt=0)
    notify_batch: int = Field(default=50, ge=1, le=1000)
    notify_poll: float = Field(default=1.0, gt=0)

    # The scheduler: how often it sweeps; links in emails and SMS point at PUBLIC_URL (default: the local
    # server); a survey is sent SURVEY_DELAY_HOURS after a case is resolved and can be answered for
    # SURVEY_LIFETIME_DAYS; ALERT_RULES replaces the built-in manager alert rules with a YAML file of yours;
    # managers get their digest at DIGEST_HOUR local time.
    scheduler_interval: float = Field(default=60.0, ge=1.0)
    public_url: str | None = None
    survey_delay_hours: float = Field(default=2.0, ge=0)
    survey_lifetime_days: int = Field(default=14, ge=1, le=365)
    alert_rules: Path | None = None
    # The care plan (lifecycle-stage activities per segment); the built-in one when unset.
    care_plan: Path | None = None
    digest_hour: int = Field(default=8, ge=0, le=23)

    nlu_backend: Literal["embedded", "rasa"] = "embedded"
    rasa_url: str | None = None

    timezone: str = "Asia/Shanghai"
    default_lang: Literal["en", "zh"] = "en"
    currency: str = "CNY"

    # Customer value model: weight per criterion (revenue, order_frequency, service_cost, csat) and the
    # share of customers in each pyramid tier, top first (key, major, regular, minor).
    value_weights: dict[str, float] = Field(
        default_factory=lambda: {"revenue": 0.45, "order_frequency": 0.25, "service_cost": 0.15, "csat": 0.15}
    )
    value_tier_shares: dict[str, float] = Field(
        default_factory=lambda: {"key": 0.10, "major": 0.20, "regular": 0.40, "minor": 0.30}
    )
    # Lifecycle stage rule thresholds over the defaults in core/domain/lifecycle.py (new_days, at_risk_days,
    # churned_days, low_csat, complaints, loyal_days, loyal_orders).
    lifecycle_thresholds: dict[str, float] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {value!r}") from exc
        return value

    @field_validator("quiet_hours")
    @classmethod
    def _valid_quiet_hours(cls, value: str) -> str:
        from core.domain.quiet import parse_quiet_hours

        parse_quiet_hours(value)
        return value.strip()

    @field_validator("care_plan")
    @classmethod
    def _valid_care_plan(cls, value: Path | None) -> Path | None:
        from core.domain.care_plan import load_care_plan

        if value is not None:
            load_care_plan(value)  # refused at start, with the file, line and reason
        return value

    @model_validator(mode="after")
    def _valid_value_model(self) -> Settings:
        from core.domain.value import value_model_from_config

        value_model_from_config(self.value_weights, self.value_tier_shares)
        from core.domain.lifecycle import lifecycle_rules_from_config

        lifecycle_rules_from_config(self.lifecycle_thresholds)
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment wins over crmbot.toml; explicit arguments win over both."""
        return (init_settings, env_settings, TomlConfigSettingsSource(settings_cls))

    @property
    def mail_directory(self) -> Path:
        """Where mail goes as .eml files when no SMTP host is set."""
        return self.mail_dir or self.data_dir / "mail"

    @property
    def base_url(self) -> str:
        """Where people reach this server from outside (links in emails and SMS), without a trailing /."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def sms_directory(self) -> Path:
        """Where the file SMS provider writes messages."""
        return self.sms_dir or self.data_dir / "sms"

    def resolve_api_token(self) -> tuple[str, bool]:
        """Return the admin API token, generating and keeping one in the data dir if unset.

        The boolean tells whether the token was generated now (so the caller prints it once).
        """
        if self.api_token is not None and self.api_token.get_secret_value():
            return self.api_token.get_secret_value(), False
        token_file = self.data_dir / "api_token"
        if token_file.exists():
            stored = token_file.read_text(encoding="utf-8").strip()
            if stored:
                return stored, False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        token_file.write_text(token + "\n", encoding="utf-8")
        token_file.chmod(0o600)
        return token, True
