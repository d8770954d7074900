"""Knowledge base: articles and the defect library, and search over them."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Query

from core.errors import ValidationFailed
from core.schemas import KbArticleIn, KbArticleOut, KbSearchHit, Page
from crmbot.api.deps import ActorDep, CodePath, CoreDep, PagingDep

router = APIRouter(tags=["knowledge"])
LangQuery = Annotated[Literal["en", "zh"] | None, Query(description="Article language.")]


@router.get("/kb/articles")
async def list_articles(
    actor: ActorDep,
    core: CoreDep,
    paging: PagingDep,
    category: Annotated[
        str | None, Query(max_length=300, description="A category path like a/b (sub-categories included).")
    ] = None,
    product: Annotated[str | None, Query(max_length=64, description="Product code.")] = None,
    lang: LangQuery = None,
) -> Page[KbArticleOut]:
    """Articles, by code."""
    return await core.knowledge.list(
        actor, category=category, product_code=product, lang=lang, limit=paging.limit, offset=paging.offset
    )


@router.get("/kb/articles/{code:path}")
async def get_article(code: CodePath, actor: ActorDep, core: CoreDep) -> KbArticleOut:
    """One article."""
    return await core.knowledge.get(actor, code)


@router.put("/kb/articles/{code:path}")
async def put_article(code: CodePath, body: KbArticleIn, actor: ActorDep, core: CoreDep) -> KbArticleOut:
    """Create or replace an article; the body's `code` must be the one in the URL."""
    if body.code != code.strip():
        raise ValidationFailed(
            f"The body's code '{body.code}' does not match the URL's '{code.strip()}'.", field="code"
        )
    return await core.knowledge.upsert(actor, body)


@router.get("/kb/search")
async def search(
    actor: ActorDep,
    core: CoreDep,
    q: Annotated[str, Query(min_length=1, max_length=2000, description="A question, symptom or error code.")],
    limit: Annotated[int, Query(ge=1, le=50)] = 5,
    product: Annotated[str | None, Query(max_length=64, description="Product code.")] = None,
    lang: LangQuery = None,
) -> list[KbSearchHit]:
    """The best articles for a free-text question, best first."""
    return await core.knowledge.search(actor, q, limit=limit, product_code=product, lang=lang)
