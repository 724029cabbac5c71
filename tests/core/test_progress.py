"""bnlessons.progress: a progress bar whose final text does not depend on the speed."""
import io

from bnlessons import progress


def test_progress_bar_final_text_is_deterministic():
    buffers = []
    for _ in range(2):
        buf = io.StringIO()
        bar = progress.progress_bar(1000, "run", file=buf)
        for _ in range(1000):
            bar.update(1)
        bar.close()
        buffers.append(buf.getvalue().split("\r")[-1])
    assert buffers[0] == buffers[1]
    assert "it/s" not in buffers[0] and "1000/1000" in buffers[0]
