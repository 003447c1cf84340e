"""A collection hook that keeps ``pytest -n 2 --dist loadgroup`` (make test) grouping tests."""
import pytest


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Keep ``--dist loadgroup`` working: pytest-xdist (3.8) puts a test of an ``xdist_group`` on
    its group's worker by rewriting ``item._nodeid`` to ``<id>@<group>``, but pytest 9 reads the
    node id from ``item._id``, so the suffix was ignored and a group's tests (and their session
    fixture, such as the tiny run) were spread over every worker. Copy the suffixed id over."""
    for item in items:
        suffixed = item.__dict__.get("_nodeid")
        if suffixed and suffixed != item.nodeid:
            from _pytest.nodeid import coerce_node_id  # pytest >= 9; before, nodeid *is* _nodeid

            item._id = coerce_node_id(suffixed)
    # Whole pipeline runs first (stable sort: the shuffled order stays within each class), so that
    # the workers' last minutes hold short tests instead of a two-minute run started late.
    items.sort(key=lambda item: not (item.get_closest_marker("real_layout") or item.get_closest_marker("notebooks")))
