"""ArtifactCache.load_or_build, the one flow of every cached artifact, on a fake artifact: hit, miss, rebuilt."""

import json

from stream.backends.cache import ArtifactCache, Build, Unusable

FIELDS = {"artifact": "fake", "model": "m", "setting": 1}


class Fake:
    """A text artifact; `refuse` makes the reader find a stored one unusable."""

    def __init__(self, cache: ArtifactCache, fields=FIELDS) -> None:
        self.cache, self.fields, self.builds, self.refuse = cache, fields, 0, False

    def read(self, look):
        if self.refuse:
            raise Unusable("the runtime refused it")
        return look.artifact.read_text()

    def build(self) -> Build:
        self.builds += 1

        def write(tmp, progress):
            tmp.write_text(f"built {self.builds}")
            return {"reported": self.builds}

        return Build(f"making the fake {self.builds}", write, lambda path: path.read_text(), {"known": True})

    def get(self, changed=None):
        return self.cache.load_or_build("fake", self.fields, ".txt", label="fake model for m",
                                        again="making it again", read=self.read, build=self.build, changed=changed)


def test_miss_then_hit_with_what_the_build_reported_in_the_sidecar(tmp_path, capsys):
    fake = Fake(ArtifactCache(tmp_path))
    first = fake.get()
    assert (first.value, first.cache, fake.builds) == ("built 1", "miss", 1) and first.build_s is not None
    assert "making the fake 1" in capsys.readouterr().out
    second = fake.get()
    assert (second.value, second.cache, second.build_s, fake.builds) == ("built 1", "hit", None, 1)
    assert second.artifact == first.artifact
    meta = json.loads(first.artifact.with_name(first.artifact.name + ".json").read_text())["meta"]
    assert meta == {"known": True, "reported": 1}


def test_a_corrupt_or_refused_entry_is_rebuilt_saying_why(tmp_path, capsys):
    fake = Fake(ArtifactCache(tmp_path))
    path = fake.get().artifact
    path.write_text("tampered")
    corrupt = fake.get()
    assert corrupt.cache == f"rebuilt (the artifact file {path.name} is corrupt (checksum mismatch))"
    assert corrupt.value == "built 2"
    assert f"cached fake model for m is unusable (the artifact file {path.name} is corrupt" in capsys.readouterr().out
    fake.refuse = True
    refused = fake.get()
    assert refused.cache == "rebuilt (the runtime refused it)" and refused.value == "built 3"
    assert "unusable (the runtime refused it); making it again" in capsys.readouterr().out


def test_a_first_build_beside_other_settings_says_which_changed(tmp_path, capsys):
    cache = ArtifactCache(tmp_path)
    Fake(cache).get(changed="fake settings")
    other = Fake(cache, dict(FIELDS, setting=2)).get(changed="fake settings")
    assert other.cache == "miss (fake settings changed: setting 1 != 2)"
    assert "no cached fake model for m with these settings (setting 1 != 2); making" in capsys.readouterr().out
    assert Fake(cache, dict(FIELDS, setting=3)).get().cache == "miss"  # without `changed`: a plain miss
