"""GX Data Docs of a window: GX's own pages, with compiled templates cached on disk."""

import re

import polars as pl

from quality.suite import QualityConfig, curate_window

RAW = {
    "window_key": pl.String,
    "row_number": pl.Int64,
    "record_id": pl.String,
    "text": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "metadata": pl.String,
}
# run ids, uuids of collapsible blocks and times differ between two builds of the same validation
VOLATILE = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{12,}"
    r"|\d{8}T\d{6}\.\d+Z|\d{4}-\d\d-\d\d[ T][\d:.]+( UTC|\+00:00|Z)?|\d{10}\.\d+"
)


def _rows():
    texts = ["fast async client", "", "a\x07bell", "fast async client", "ok " * 5, None]
    n = len(texts)
    return pl.DataFrame(
        {
            "window_key": ["w"] * n,
            "row_number": list(range(1, n + 1)),
            "record_id": [f"r{i}" for i in range(n)],
            "text": texts,
            "ts": [None] * n,
            "metadata": ["{}"] * n,
        },
        schema=RAW,
    )


def _pages(site):
    index = (site / "index.html").read_text()
    [validation] = [p for p in site.rglob("*.html") if "validations" in p.parts]
    return VOLATILE.sub("X", index), VOLATILE.sub("X", validation.read_text())


def test_cached_views_render_the_same_pages_as_gx_and_fill_the_bytecode_cache(tmp_path, monkeypatch):
    import quality.suite.data_docs as data_docs

    cache = tmp_path / "jinja"
    monkeypatch.setenv("STREAMTUNE_JINJA_CACHE_DIR", str(cache))
    cfg = QualityConfig(pii=False)
    curate_window(_rows(), cfg, docs_dir=tmp_path / "cached")
    assert any(cache.glob("__jinja2_*.cache"))  # compiled once, loaded by every later build/process

    cached_site_config = data_docs.site_config

    def stock(target):  # GX's default views
        config = cached_site_config(target)
        config["site_index_builder"] = {"class_name": "DefaultSiteIndexBuilder"}
        del config["site_section_builders"]["validations"]
        return config

    monkeypatch.setattr(data_docs, "site_config", stock)
    curate_window(_rows(), cfg, docs_dir=tmp_path / "stock")
    cached_pages, stock_pages = _pages(tmp_path / "cached"), _pages(tmp_path / "stock")
    assert cached_pages == stock_pages
    assert "text_control_chars" in cached_pages[1] and "a\x07bell" not in cached_pages[1]  # rule ids, no values
