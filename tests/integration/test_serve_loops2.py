# SPDX-License-Identifier: Apache-2.0
"""test_serve.py again, every daemon with two HTTP loop threads
(--http-threads=2): a multi-loop daemon passes the whole suite."""

import os
import runpy

os.environ["SS_TEST_HTTP_THREADS"] = "2"
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "test_serve.py"), run_name="__main__")
