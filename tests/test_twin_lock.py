"""Synthetic twins are written by one process at a time: a book executing two pages at once once read a revisitop
twin image another page was still writing (UnidentifiedImageError). The writers hold ``<parent>/.<root>.lock``."""
import subprocess
import sys
import time

import pytest

from vitscope.locks import file_lock

WRITER = """
import sys
from vitscope.data.twins.coco import write_coco_twin
write_coco_twin(sys.argv[1], n_images=3, size=32, seed=0)
print("done")
"""


@pytest.mark.reliability("fault", "two pages writing the same synthetic twin: the second waits for the first")
def test_a_twin_writer_waits_for_the_lock_holder(tmp_path):
    root = tmp_path / "synthetic-coco"
    with file_lock(tmp_path / ".synthetic-coco.lock"):          # another writer holds the twin
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(root)], stdout=subprocess.PIPE, text=True)
        time.sleep(3.0)
        assert proc.poll() is None, "the writer did not wait for the lock"
        assert not root.exists() or not any(root.rglob("*.jpg")), "the writer wrote while another held the lock"
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "done" in out
    assert len(list(root.rglob("*.jpg"))) == 3 and (root / "synthetic.json").is_file()


def test_stamp_is_last_atomic_and_compares_json_canonically(tmp_path):
    """A folder is complete only when its stamp records the same arguments (tuples and lists compare equal, as JSON
    reads them back); a damaged stamp means incomplete; the stamp is replaced atomically (no temporary left)."""
    from vitscope.data.stamps import STAMP_NAME, is_complete, mark_complete

    meta = {"size": 96, "categories": ("cat", "dog")}
    assert not is_complete(tmp_path, meta)
    mark_complete(tmp_path, meta)
    assert is_complete(tmp_path, meta) and is_complete(tmp_path, {"size": 96, "categories": ["cat", "dog"]})
    assert not is_complete(tmp_path, {**meta, "size": 64})
    assert [p.name for p in tmp_path.iterdir()] == [STAMP_NAME]
    (tmp_path / STAMP_NAME).write_text('{"size": 9')          # a writer killed while writing an old-style stamp
    assert not is_complete(tmp_path, meta)
