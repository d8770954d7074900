"""Knowledge base: category tree, articles (product defects with symptoms and solutions), search."""

from __future__ import annotations

import asyncio
import builtins
import time
from datetime import datetime

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from core.auth import Actor, require_role
from core.clock import Clock
from core.db.models import KbArticle, KbCategory, Product
from core.domain.enums import Role
from core.errors import NotFound, ValidationFailed
from core.kb_index import KbDocument, KbIndex
from core.schemas import KbArticleIn, KbArticleOut, KbSearchHit, Page
from core.services.base import Service, UowFactory, fetch_page

MAX_CATEGORY_DEPTH = 6
REFRESH_INTERVAL = 2.0


def split_category(path: str) -> tuple[str, ...]:
    """'a/b/c' → ('a', 'b', 'c'); empty segments and very deep trees are refused."""
    parts = tuple(part.strip() for part in path.strip().strip("/").split("/")) if path.strip() else ()
    if any(not part for part in parts):
        raise ValidationFailed(f"Category '{path[:80]}' has an empty level.", field="category")
    if len(parts) > MAX_CATEGORY_DEPTH:
        raise ValidationFailed(
            f"Category '{path[:80]}' is deeper than {MAX_CATEGORY_DEPTH} levels.", field="category"
        )
    return parts


async def ensure_category(
    session: AsyncSession, parts: tuple[str, ...], cache: dict[str, int] | None = None
) -> int | None:
    """Create the category path level by level (idempotent) and return the leaf's id."""
    parent_id: int | None = None
    for depth in range(1, len(parts) + 1):
        path = "/".join(parts[:depth])
        if cache is not None and path in cache:
            parent_id = cache[path]
            continue
        category = (
            await session.execute(select(KbCategory).where(KbCategory.path == path))
        ).scalar_one_or_none()
        if category is None:
            category = KbCategory(path=path, name=parts[depth - 1], parent_id=parent_id)
            session.add(category)
            await session.flush()
        parent_id = category.id
        if cache is not None:
            cache[path] = category.id
    return parent_id


class KnowledgeService(Service):
    """Articles in the database, searched through an in-memory index kept in step with it."""

    def __init__(self, uow: UowFactory, clock: Clock, timezone: str = "UTC") -> None:
        super().__init__(uow, clock, timezone)
        self._index = KbIndex()
        self._indexed_through: datetime | None = None
        self._indexed_count = 0
        self._refresh_lock = asyncio.Lock()
        self._checked_at = -REFRESH_INTERVAL

    async def upsert(self, actor: Actor, data: KbArticleIn) -> KbArticleOut:
        """Create or update an article by code."""
        require_role(actor, Role.AGENT, Role.MANAGER, doing="edit the knowledge base")
        async with self._uow() as uow:
            session = uow.session
            category_id = await ensure_category(session, split_category(data.category))
            product_id = None
            if data.product_code:
                product_id = (
                    await session.execute(select(Product.id).where(Product.code == data.product_code))
                ).scalar_one_or_none()
                if product_id is None:
                    raise NotFound(f"No product with code '{data.product_code}'.", field="product_code")
            now = self._clock.now()
            article = (
                await session.execute(select(KbArticle).where(KbArticle.code == data.code))
            ).scalar_one_or_none()
            if article is None:
                article = KbArticle(code=data.code, created_at=now, solved_count=0)
                session.add(article)
            article.title, article.category_id, article.product_id = data.title, category_id, product_id
            article.symptoms, article.solution, article.lang, article.updated_at = (
                data.symptoms,
                data.solution,
                data.lang,
                now,
            )
            await session.flush()
            await uow.commit()
            self._index.add(_document(article, "/".join(split_category(data.category)), data.product_code))
        return await self.get(actor, data.code)

    async def get(self, actor: Actor, code: str) -> KbArticleOut:
        """One article by code (the knowledge base is readable by everyone)."""
        async with self._uow() as uow:
            row = (
                (
                    await uow.session.execute(
                        select(KbArticle, KbCategory.path, Product.code)
                        .outerjoin(KbCategory, KbCategory.id == KbArticle.category_id)
                        .outerjoin(Product, Product.id == KbArticle.product_id)
                        .where(KbArticle.code == code.strip())
                    )
                )
                .tuples()
                .first()
            )
            if row is None:
                raise NotFound(f"No knowledge article '{code[:64]}'.", field="code")
            article, path, product_code = row
            return _article_out(article, path, product_code)

    async def list(
        self,
        actor: Actor,
        *,
        category: str | None = None,
        product_code: str | None = None,
        lang: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> Page[KbArticleOut]:
        """Articles, optionally under a category path, for a product or in a language."""
        conditions: list[ColumnElement[bool]] = []
        if category:
            prefix = "/".join(split_category(category))
            conditions.append((KbCategory.path == prefix) | KbCategory.path.startswith(prefix + "/"))
        if product_code:
            conditions.append(Product.code == product_code)
        if lang:
            conditions.append(KbArticle.lang == lang)
        base = (
            select(KbArticle, KbCategory.path, Product.code)
            .outerjoin(KbCategory, KbCategory.id == KbArticle.category_id)
            .outerjoin(Product, Product.id == KbArticle.product_id)
            .where(*conditions)
        )
        async with self._uow() as uow:
            total, rows = await fetch_page(
                uow.session, base.order_by(KbArticle.code), limit=limit, offset=offset
            )
            return Page[KbArticleOut](
                items=[_article_out(article, path, code) for article, path, code in rows],
                total=total,
                limit=limit,
                offset=offset,
            )

    async def search(
        self,
        actor: Actor,
        query: str,
        *,
        limit: int = 5,
        product_code: str | None = None,
        lang: str | None = None,
    ) -> builtins.list[KbSearchHit]:
        """Best articles for a free-text question (typos, synonyms, error codes, Chinese)."""
        limit = max(1, min(limit, 50))
        await self._refresh()
        hits = self._index.search(query[:2000], limit, product_code=product_code, lang=lang)
        if not hits:
            return []
        async with self._uow() as uow:
            rows = (
                (
                    await uow.session.execute(
                        select(KbArticle, Product.code)
                        .outerjoin(Product, Product.id == KbArticle.product_id)
                        .where(KbArticle.id.in_([hit.id for hit in hits]))
                    )
                )
                .tuples()
                .all()
            )
        by_id = {article.id: (article, code) for article, code in rows}
        results = []
        for hit in hits:
            if hit.id not in by_id:
                continue
            article, code = by_id[hit.id]
            results.append(
                KbSearchHit(
                    code=article.code,
                    title=article.title,
                    score=round(hit.score, 1),
                    product_code=code,
                    lang=article.lang,
                    solution=article.solution,
                )
            )
        return results

    async def mark_solved(self, actor: Actor, code: str) -> bool:
        """Count that an article solved someone's problem; False when there is no such article."""
        async with self._uow() as uow:
            article = (
                await uow.session.execute(select(KbArticle).where(KbArticle.code == code.strip()[:64]))
            ).scalar_one_or_none()
            if article is None:
                return False
            # Counted in SQL so concurrent clicks never lose one.
            await uow.session.execute(
                update(KbArticle)
                .where(KbArticle.id == article.id)
                .values(solved_count=KbArticle.solved_count + 1)
            )
            await uow.commit()
            return True

    def invalidate(self) -> None:
        """Articles were written behind this service's back (an import): look again on the next search."""
        self._checked_at = -REFRESH_INTERVAL

    async def _refresh(self) -> None:
        """Pull articles changed since the last look into the index (cheap when nothing changed).

        Changes made in this process are indexed at once; other processes' changes are looked for at
        most every REFRESH_INTERVAL seconds, so a busy chat does not ask the database on every search.
        """
        if time.monotonic() - self._checked_at < REFRESH_INTERVAL:
            return
        self._checked_at = time.monotonic()
        async with self._refresh_lock, self._uow() as uow:
            session = uow.session
            latest, count = (
                (await session.execute(select(func.max(KbArticle.updated_at), func.count(KbArticle.id))))
                .tuples()
                .one()
            )
            if latest == self._indexed_through and count == self._indexed_count:
                return
            query = (
                select(KbArticle, KbCategory.path, Product.code)
                .outerjoin(KbCategory, KbCategory.id == KbArticle.category_id)
                .outerjoin(Product, Product.id == KbArticle.product_id)
            )
            if self._indexed_through is not None and count >= self._indexed_count:
                query = query.where(KbArticle.updated_at >= self._indexed_through)
            else:
                self._index = KbIndex()
            for article, path, product_code in (await session.execute(query)).tuples():
                self._index.add(_document(article, path or "", product_code))
            self._indexed_through, self._indexed_count = latest, count


def _document(article: KbArticle, category: str, product_code: str | None) -> KbDocument:
    return KbDocument(
        id=article.id,
        code=article.code,
        title=article.title,
        symptoms=article.symptoms,
        solution=article.solution,
        lang=article.lang,
        product_code=product_code,
        category=category,
    )


def _article_out(article: KbArticle, path: str | None, product_code: str | None) -> KbArticleOut:
    return KbArticleOut(
        id=article.id,
        code=article.code,
        title=article.title,
        category=path or "",
        product_code=product_code,
        symptoms=article.symptoms,
        solution=article.solution,
        lang=article.lang,
    )
