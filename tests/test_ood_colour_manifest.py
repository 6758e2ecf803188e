"""The colour manifest's measured colours (``mask_mean_r/g/b``): a cell that is not a finite
number is a DatasetLayoutError naming the manifest, the line and the column."""

from __future__ import annotations

import numpy as np
import pytest

from anomaly_inspect.data.layout import DatasetLayoutError
from anomaly_inspect.data.mvtec_ood import read_group_colours

HEADER = "category,path,colour_group,mask_mean_r,mask_mean_g,mask_mean_b\n"


def _manifest(tmp_path, *rows: str):
    path = tmp_path / "man.csv"
    path.write_text(HEADER + "".join(f"{r}\n" for r in rows))
    return path


@pytest.mark.parametrize("cell", ["n/a", "", "nan", "inf"])
def test_a_colour_cell_that_is_no_number_names_the_file_line_and_column(tmp_path, cell):
    path = _manifest(tmp_path, "other,x.png,red,oops,0,0",  # another category's row: not read
                     "tiny,test/scratch/000.png,red,200,50,50",
                     f"tiny,test/scratch/001.png,red,200,{cell},50")
    with pytest.raises(DatasetLayoutError) as err:
        read_group_colours(path, "tiny")
    assert str(err.value).startswith(f"{path}, line 4: mask_mean_g ")
    assert repr(cell) in str(err.value) and "not a number" in str(err.value)


def test_the_group_colours_are_the_means_of_their_rows(tmp_path):
    path = _manifest(tmp_path, "tiny,a.png,red,200,50,50", "tiny,b.png,red,100,50,70",
                     "tiny,c.png,blue, 20 ,20,200", "other,d.png,red,0,0,0")
    got = read_group_colours(path, "tiny")
    assert sorted(got) == ["blue", "red"]
    np.testing.assert_allclose(got["red"], [150, 50, 60])
    np.testing.assert_allclose(got["blue"], [20, 20, 200])


def test_the_line_named_counts_the_blank_lines_the_reader_skips(tmp_path):
    path = _manifest(tmp_path, "tiny,a.png,red,200,50,50", "", "", "tiny,b.png,red,200,x,50")
    with pytest.raises(DatasetLayoutError, match=r", line 5: mask_mean_g 'x'"):
        read_group_colours(path, "tiny")


def test_isic_index_lines_count_blank_lines(tmp_path):
    from anomaly_inspect.data.isic import read_csv_rows

    path = tmp_path / "a.csv"
    path.write_text("a,b\n1,2\n\n3,4\n")
    header, rows = read_csv_rows(path)
    assert header == ["a", "b"] and rows == [(2, {"a": "1", "b": "2"}), (4, {"a": "3", "b": "4"})]
