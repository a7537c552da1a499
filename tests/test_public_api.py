import gate


def test_all_is_sorted_and_exactly_the_public_names():
    public = {n for n in dir(gate) if not n.startswith("_")} - {"annotations"}
    modules = {n for n in public if type(getattr(gate, n)).__name__ == "module"}
    assert gate.__all__ == sorted(gate.__all__)
    assert set(gate.__all__) == public - modules
    for name in gate.__all__:
        assert getattr(gate, name) is not None


def test_migration_error_backend_alias():
    assert gate.MigrationError.Backend is gate.BackendError
    assert issubclass(gate.BackendError, gate.MigrationError)
