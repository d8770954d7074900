"""The core's half of the composition root: engine, session factory and every service, built on demand."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from core.clock import Clock, SystemClock
from core.db.engine import create_engine, create_session_factory
from core.domain.lifecycle import lifecycle_rules_from_config
from core.domain.value import value_model_from_config
from core.services.care import CareService
from core.services.conversations import ConversationStore
from core.services.customers import CustomerService
from core.services.digest import DigestService
from core.services.housekeeping import HousekeepingService
from core.services.installed import InstalledBaseService
from core.services.knowledge import KnowledgeService
from core.services.linking import LinkingService
from core.services.notifications import NotificationService
from core.services.org import OrgService
from core.services.pipeline import PipelineService
from core.services.preferences import PreferenceService
from core.services.sales import SalesService
from core.services.servicedesk import ServiceDesk
from core.services.sla import SlaService
from core.services.surveys import SurveyService
from core.services.watch import WatchService
from core.settings import Settings
from core.uow import UnitOfWork


@dataclass
class Core:
    """Every core service, sharing one engine and clock."""

    settings: Settings
    engine: AsyncEngine
    session_factory: async_sessionmaker[AsyncSession]
    clock: Clock
    org: OrgService
    customers: CustomerService
    installed: InstalledBaseService
    service_desk: ServiceDesk
    sales: SalesService
    pipeline: PipelineService
    knowledge: KnowledgeService
    surveys: SurveyService
    conversations: ConversationStore
    linking: LinkingService
    notifications: NotificationService
    care: CareService
    watch: WatchService
    sla: SlaService
    housekeeping: HousekeepingService
    digest: DigestService
    preferences: PreferenceService
    # Called after every commit that wrote outbox events (the in-process notifier wakes on it).
    commit_listeners: list[Callable[[], None]] = field(default_factory=list)

    def uow(self) -> UnitOfWork:
        """A new unit of work."""
        return UnitOfWork(self.session_factory, self.clock, self.events_committed)

    def events_committed(self) -> None:
        """Tell the listeners that new outbox events are committed."""
        for listener in self.commit_listeners:
            listener()

    async def close(self) -> None:
        """Release database connections."""
        await self.engine.dispose()


def build_core(settings: Settings, *, clock: Clock | None = None, engine: AsyncEngine | None = None) -> Core:
    """Wire the core from settings; nothing connects until first use."""
    clock = clock or SystemClock()
    engine = engine or create_engine(settings.database_url)
    session_factory = create_session_factory(engine)

    listeners: list[Callable[[], None]] = []

    def events_committed() -> None:
        for listener in listeners:
            listener()

    def uow() -> UnitOfWork:
        return UnitOfWork(session_factory, clock, events_committed)

    tz = settings.timezone
    return Core(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        clock=clock,
        org=OrgService(uow, clock, tz),
        customers=CustomerService(
            uow, clock, tz, value_model_from_config(settings.value_weights, settings.value_tier_shares),
            lifecycle_rules_from_config(settings.lifecycle_thresholds),
        ),
        installed=InstalledBaseService(uow, clock, tz),
        service_desk=ServiceDesk(uow, clock, tz),
        sales=SalesService(uow, clock, tz),
        pipeline=PipelineService(uow, clock, tz),
        knowledge=KnowledgeService(uow, clock, tz),
        surveys=SurveyService(uow, clock, tz),
        conversations=ConversationStore(uow, clock, tz),
        linking=LinkingService(uow, clock, tz),
        notifications=NotificationService(uow, clock, tz),
        care=CareService(uow, clock, tz),
        watch=WatchService(uow, clock, tz),
        sla=SlaService(uow, clock, tz),
        housekeeping=HousekeepingService(uow, clock, tz),
        digest=DigestService(uow, clock, tz, digest_hour=settings.digest_hour),
        preferences=PreferenceService(uow, clock, tz, default_quiet=settings.quiet_hours),
        commit_listeners=listeners,
    )
