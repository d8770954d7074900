"""The manager's pipeline report: funnel, weighted forecast by month, per rep, stage conversion and age."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, ScalarSelect, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import Actor, require_role, sales_scope_owner
from core.db.models import Department, Opportunity, OpportunityChange, User
from core.domain.enums import OPEN_STAGES, OpportunityStage, Role
from core.errors import NotFound, PermissionDenied, ValidationFailed
from core.schemas import (
    PipelineAgeOut,
    PipelineConversionOut,
    PipelineReportOut,
    PipelineRepOut,
    PipelineStageOut,
)
from core.services.base import Service

ZERO = Decimal("0.00")
CENT = Decimal("0.01")
OPEN = tuple(stage.value for stage in OPEN_STAGES)
WON = OpportunityStage.CLOSED_WON.value
LOST = OpportunityStage.CLOSED_LOST.value
# Pipeline order: a won deal got past every open stage.
ORDER = {stage: index for index, stage in enumerate((*OPEN, WON))}
OUT_OF_SCOPE = "You can only see your own team's pipeline."


def _weighted(amount: Decimal, probability: int) -> Decimal:
    return (amount * probability / 100).quantize(CENT)


def _days(since: datetime, now: datetime) -> float:
    """Whole-and-fractional days between two instants (SQLite hands back naive UTC)."""
    if since.tzinfo is None:
        since = since.replace(tzinfo=now.tzinfo)
    return max(0.0, (now - since).total_seconds() / 86400)


def furthest_stage(current: str, visited: Iterable[str]) -> int | None:
    """How far down the funnel a deal got: the highest pipeline index among the stages it has been in
    (history plus the current stage); None when it never was in an open stage we know of."""
    indexes = [ORDER[stage] for stage in (current, *visited) if stage in ORDER]
    return max(indexes) if indexes else None


def conversion(furthest: Iterable[int | None]) -> list[PipelineConversionOut]:
    """Stage conversion from each deal's furthest stage: a deal that got to stage N+1 passed N (funnel
    assumption, so a deal created straight into "proposal" counts as having passed qualification). A won
    deal got past every stage, so "won" is the same count for each stage and only its share changes."""
    # How many deals got exactly this far: one pass, then sums.
    deepest = [0] * len(ORDER)
    for far in furthest:
        if far is not None:
            deepest[far] += 1
    won_total = deepest[ORDER[WON]]
    rows: list[PipelineConversionOut] = []
    for index, stage in enumerate(OPEN):
        reached = sum(deepest[index:])
        advanced = sum(deepest[index + 1 :])
        rows.append(
            PipelineConversionOut(
                stage=stage,
                reached=reached,
                advanced=advanced,
                rate=round(advanced / reached, 4) if reached else None,
                won=won_total,
                win_rate=round(won_total / reached, 4) if reached else None,
            )
        )
    return rows


class PipelineService(Service):
    """Pipeline figures for managers (their subtree) and reps (themselves), scoped in SQL."""

    async def report(
        self,
        actor: Actor,
        close_from: date | None = None,
        close_to: date | None = None,
        rep: str | None = None,
        team: str | None = None,
    ) -> PipelineReportOut:
        """Deals in scope expected to close in [close_from, close_to] (closed deals by that date too),
        optionally of one rep (username or name) or one team (department code or name) in the subtree.

        Asking for anyone outside the actor's subtree is refused with the same message whether or not
        that person or team exists. Age is counted since the deal entered its current stage and since it
        was created, both in days, for open deals only.
        """
        require_role(actor, Role.REP, Role.MANAGER, doing="see the pipeline")
        if close_from and close_to and close_from > close_to:
            raise ValidationFailed("The period starts after it ends.", field="close_from")
        conditions: list[ColumnElement[bool]] = [sales_scope_owner(actor, Opportunity.owner_id)]
        if close_from:
            conditions.append(Opportunity.expected_close >= close_from)
        if close_to:
            conditions.append(Opportunity.expected_close <= close_to)
        now = self._clock.now()
        async with self._uow() as uow:
            session = uow.session
            rep_name: str | None = None
            team_code: str | None = None
            team_name: str | None = None
            if rep:
                person = await self._rep_in_scope(session, actor, rep)
                conditions.append(Opportunity.owner_id == person.id)
                rep_name = person.username
            if team:
                team_code, team_name, members = await self._team_in_scope(session, actor, team)
                conditions.append(Opportunity.owner_id.in_(members))
            deals = (
                (
                    await session.execute(
                        select(
                            Opportunity.id,
                            Opportunity.stage,
                            Opportunity.amount,
                            Opportunity.probability,
                            Opportunity.expected_close,
                            Opportunity.created_at,
                            Opportunity.stage_changed_at,
                            User.username,
                            User.name,
                        )
                        .join(User, User.id == Opportunity.owner_id)
                        .where(*conditions)
                        .order_by(Opportunity.id)
                    )
                )
                .tuples()
                .all()
            )
            scope = select(Opportunity.id).where(*conditions).scalar_subquery()
            visited = await self._visited_stages(session, scope)
        counts = dict.fromkeys((stage.value for stage in OpportunityStage), 0)
        amounts = dict.fromkeys(counts, ZERO)
        weighted = dict.fromkeys(counts, ZERO)
        by_month: dict[str, Decimal] = {}
        # Per rep: [name, open count, open amount, weighted, won count, won amount].
        reps: dict[str, list[Any]] = {}
        in_stage: dict[str, list[float]] = defaultdict(list)
        open_for: dict[str, list[float]] = defaultdict(list)
        furthest: list[int | None] = []
        for deal_id, stage, amount, probability, closes, created, entered, username, name in deals:
            value = _weighted(amount, probability)
            counts[stage] += 1
            amounts[stage] += amount
            weighted[stage] += value
            row = reps.get(username)
            if row is None:
                row = reps[username] = [name, 0, ZERO, ZERO, 0, ZERO]
            furthest.append(furthest_stage(stage, visited.get(deal_id, ())))
            if stage in OPEN:
                row[1] += 1
                row[2] += amount
                row[3] += value
                in_stage[stage].append(_days(entered, now))
                open_for[stage].append(_days(created, now))
                if closes is not None:
                    month = f"{closes.year:04d}-{closes.month:02d}"
                    by_month[month] = by_month.get(month, ZERO) + value
            elif stage == WON:
                row[4] += 1
                row[5] += amount
        stages = [
            PipelineStageOut(
                stage=stage, count=counts[stage], amount=amounts[stage], weighted=weighted[stage]
            )
            for stage in counts
        ]
        return PipelineReportOut(
            close_from=close_from,
            close_to=close_to,
            rep=rep_name,
            team=team_code,
            team_name=team_name,
            stages=stages,
            open_count=sum(counts[stage] for stage in OPEN),
            open_amount=sum((amounts[stage] for stage in OPEN), ZERO),
            weighted_forecast=sum((weighted[stage] for stage in OPEN), ZERO),
            won_amount=amounts[WON],
            forecast_by_month=dict(sorted(by_month.items())),
            reps=sorted(
                (
                    PipelineRepOut(
                        username=username,
                        name=name,
                        open_count=open_count,
                        open_amount=open_amount,
                        weighted=weighted_amount,
                        won_count=won_count,
                        won_amount=won_amount,
                    )
                    for username, (
                        name,
                        open_count,
                        open_amount,
                        weighted_amount,
                        won_count,
                        won_amount,
                    ) in reps.items()
                ),
                key=lambda entry: (-entry.weighted, -entry.won_amount, entry.username),
            ),
            conversion=conversion(furthest),
            age=[
                PipelineAgeOut(
                    stage=stage,
                    count=len(in_stage[stage]),
                    average_days_in_stage=round(sum(in_stage[stage]) / len(in_stage[stage]), 1)
                    if in_stage[stage]
                    else None,
                    average_days_open=round(sum(open_for[stage]) / len(open_for[stage]), 1)
                    if open_for[stage]
                    else None,
                )
                for stage in OPEN
            ],
        )

    async def _visited_stages(
        self, session: AsyncSession, deal_ids: ScalarSelect[int]
    ) -> dict[int, set[str]]:
        """Every stage each deal of the report has been in, from its change history (creation and stage
        moves), in one query over the same conditions as the report."""
        visited: dict[int, set[str]] = defaultdict(set)
        rows = await session.execute(
            select(
                OpportunityChange.opportunity_id,
                OpportunityChange.field,
                OpportunityChange.old_value,
                OpportunityChange.new_value,
            ).where(
                OpportunityChange.opportunity_id.in_(deal_ids),
                OpportunityChange.field.in_(("created", "stage")),
            )
        )
        for deal_id, field, old, new in rows.tuples():
            if field == "created":
                # Written as "<stage> <amount>" when the deal is created.
                visited[deal_id].add((new or "").split(" ")[0])
            else:
                visited[deal_id].update(value for value in (old, new) if value)
        return visited

    async def _rep_in_scope(self, session: AsyncSession, actor: Actor, rep: str) -> User:
        """A rep of the actor's subtree by username or name (or the start of one name, when only one person
        of the subtree fits: "Li" for Li Na); anyone else is refused alike."""
        asked = " ".join(rep.split())[:200].casefold()
        # "rep Zhao", "销售李娜": the word for the job is not part of the name (unless it is: "Rep North").
        plain = re.sub(r"^(?:sales\s+rep|rep|salesperson|销售代表|销售)\s*(?=\S)", "", asked)
        query = select(User).where(User.role.in_((Role.REP.value, Role.MANAGER.value)))
        if not actor.is_admin:
            # Only people in scope are ever compared, so a near miss cannot reveal who exists elsewhere.
            query = query.where(User.id.in_(actor.team_ids))
        else:
            names = (asked, plain)
            query = query.where(or_(func.lower(User.username).in_(names), func.lower(User.name).in_(names)))
        people = (await session.execute(query.order_by(User.id))).scalars().all()
        found: list[User] = []
        for wanted in dict.fromkeys((asked, plain)):
            exact = [
                person for person in people if wanted in (person.username.casefold(), person.name.casefold())
            ]
            partial = [
                person
                for person in people
                if wanted
                and (
                    person.name.casefold().startswith(wanted)
                    or any(word.startswith(wanted) for word in person.name.casefold().split())
                )
            ]
            found = exact or (partial if len(partial) == 1 else [])
            if found:
                break
        if not found:
            if actor.is_admin:
                raise NotFound(f"No sales rep named '{asked}'.", field="rep")
            raise PermissionDenied(OUT_OF_SCOPE, field="rep")
        return found[0]

    async def _team_in_scope(
        self, session: AsyncSession, actor: Actor, team: str
    ) -> tuple[str, str, set[int]]:
        """A department (by code or name) whose people are all in the actor's subtree: code, name, people."""
        wanted = " ".join(team.split())[:200].lower()
        departments = (
            await session.execute(
                select(Department.id, Department.code, Department.name, Department.parent_id)
            )
        ).all()
        match = (
            next((row for row in departments if row.code.lower() == wanted), None)
            or next((row for row in departments if row.name.lower() == wanted), None)
            or next((row for row in departments if wanted and wanted in row.name.lower()), None)
        )
        if match is None:
            if actor.is_admin:
                raise NotFound(f"No team named '{wanted}'.", field="team")
            raise PermissionDenied(OUT_OF_SCOPE, field="team")
        children: dict[int, list[int]] = defaultdict(list)
        for row in departments:
            if row.parent_id is not None:
                children[row.parent_id].append(row.id)
        tree, stack = set(), [match.id]
        while stack:
            current = stack.pop()
            if current not in tree:
                tree.add(current)
                stack.extend(children[current])
        members = set((await session.execute(select(User.id).where(User.department_id.in_(tree)))).scalars())
        if not actor.is_admin and (not members or not members <= actor.team_ids):
            raise PermissionDenied(OUT_OF_SCOPE, field="team")
        return match.code, match.name, members
