import pytest

from gate import PlacementConfig, PlacementFileError, PlacementTable, load_placement_file


def write(tmp_path, text, name="placement.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_loads_the_design_example(tmp_path):
    cfg = load_placement_file(write(tmp_path, """
[nodes]
a = "http://127.0.0.1:9001"
b = "http://127.0.0.1:9002/"

[partitions]
tenant-1 = "a"
tenant-2 = "b"
"""))
    assert cfg.nodes == {"a": "http://127.0.0.1:9001", "b": "http://127.0.0.1:9002"}
    assert cfg.partitions == {"tenant-1": "a", "tenant-2": "b"}
    cfg.check_nodes()
    table = PlacementTable(cfg.partitions)
    assert table.get("tenant-2").placement == "b"


def test_json_by_extension(tmp_path):
    cfg = load_placement_file(write(tmp_path, '{"nodes": {"a": "http://h:1"}, "partitions": {"t": "a"}}', "p.json"))
    assert cfg.partitions == {"t": "a"}


@pytest.mark.parametrize(("text", "field"), [
    ('[nodes]\na = "ftp://x"\n', "nodes.a"),
    ('[nodes]\na = "http://h:notaport"\n', "nodes.a"),
    ('[nodes]\n"a b" = "http://h:1"\n', "nodes.a b"),
    ('[partitions]\nt1 = ""\n', "partitions.t1"),
    ('[partitions]\nt1 = 3\n', "partitions.t1"),
    ('[partitions]\n"a/b" = "n"\n', "partitions.a/b"),
    ('[extra]\nx = 1\n', "extra"),
    ('partitions = 3\n', "partitions"),
    ('[nodes\n', "placement"),
])
def test_errors_name_the_bad_entry(tmp_path, text, field):
    with pytest.raises(PlacementFileError) as info:
        load_placement_file(write(tmp_path, text))
    assert info.value.field == field
    assert str(info.value).startswith(field)


def test_partition_on_undefined_node_is_named(tmp_path):
    cfg = load_placement_file(write(tmp_path, '[nodes]\na = "http://h:1"\n[partitions]\nt1 = "a"\nt2 = "zz"\n'))
    with pytest.raises(PlacementFileError) as info:
        cfg.check_nodes()
    assert info.value.field == "partitions.t2" and "zz" in str(info.value)
    cfg.check_nodes({"zz": "http://h:2"})  # --node flags may add it


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(PlacementFileError, match="cannot read"):
        load_placement_file(tmp_path / "nope.toml")


def test_config_is_immutable():
    cfg = PlacementConfig({"a": "http://h:1"}, {"t": "a"})
    with pytest.raises(TypeError):
        cfg.partitions["x"] = "a"  # type: ignore[index]
