"""Ships the top-level ``conf/`` inside the wheel as ``llv/conf`` (metadata lives in pyproject.toml)."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildWithConf(build_py):
    def run(self):
        super().run()
        if not self.editable_mode:
            shutil.copytree(Path(__file__).parent / "conf", Path(self.build_lib) / "llv" / "conf",
                            dirs_exist_ok=True)


setup(cmdclass={"build_py": BuildWithConf})
