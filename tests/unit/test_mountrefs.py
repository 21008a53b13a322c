"""plugin.volume.MountRefs: the daemon's mount reference counting."""

from plugin.volume import MountRefs


def test_every_mount_call_is_one_reference() -> None:
    refs = MountRefs()
    assert refs.add("v", "a") is True  # first reference: provision
    assert refs.add("v", "a") is False  # the same ID again (docker cp on a running container)
    assert refs.add("v", "b") is False
    assert (refs.count("v"), refs.held("v")) == (3, ["a", "a", "b"])
    assert refs.discard("v", "a") is False
    assert refs.discard("v", "b") is False
    assert refs.held("v") == ["a"]
    assert refs.discard("v", "a") is True  # last reference: release
    assert (refs.count("v"), refs.held("v")) == (0, [])


def test_unknown_ids_and_volumes_change_nothing() -> None:
    refs = MountRefs({"v": ["a"], "empty": []})
    assert refs.discard("v", "zzz") is False
    assert refs.discard("nope", "a") is False
    assert refs.held("v") == ["a"]
    assert refs.count("empty") == 0
    refs.forget("v")
    assert refs.count("v") == 0
    assert refs.add("v", "a") is True
