import matplotlib.pyplot as plt
import pytest

from pneumoloc.plots.save import save_figure, use_run


def test_save_figure_writes_pdf_and_png(tmp_path):
    use_run(tmp_path / "figs")
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    paths = save_figure(fig, "roc_at_0.5")  # dots inside a name are not extensions
    assert [p.name for p in paths] == ["roc_at_0.5.pdf", "roc_at_0.5.png"]
    assert paths[0].read_bytes().startswith(b"%PDF") and paths[1].read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="extension"):
        save_figure(fig, "roc.png")
    plt.close(fig)
