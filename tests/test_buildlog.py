from walbctr.image.buildlog import BuildLog

BUILDKIT = """\
#0 building with "default" instance using docker driver
#1 [internal] load build definition from Dockerfile
#1 DONE 0.0s
#5 [builder 2/5] RUN set -eu; if ! dpkg-query -W $BUILD_DEPS
#5 CACHED
#7 [builder 5/5] RUN set -eu; make -j"$(nproc)" "$MAKE_TARGET" DISABLE_COMMIT_ID=1
#7 0.312 g++ -c -o src/a.o src/a.cpp
#7 1.020 src/a.cpp:3:1: error: expected ';' before '}' token
#7 1.100 make: *** [Makefile:9: src/a.o] Error 1
#7 ERROR: process "/bin/sh -c make" did not complete successfully: exit code: 2
#8 [runtime 2/4] RUN set -eu; apt-get
#8 DONE 7.5s
ERROR: failed to solve: process did not complete successfully
"""


def feed(text: str) -> BuildLog:
    log = BuildLog()
    for line in text.splitlines():
        log.feed(line)
    return log


def test_buildkit_steps_and_states() -> None:
    log = feed(BUILDKIT)
    states = {s.name.split("]")[0] + "]": s.status for s in log.user_steps}
    assert states == {"[builder 2/5]": "cached", "[builder 5/5]": "failed",
                      "[runtime 2/4]": "done"}
    assert log.steps["8"].seconds == 7.5


def test_failed_step_keeps_its_last_lines() -> None:
    step = feed(BUILDKIT).failed
    assert step is not None
    assert step.name.startswith("[builder 5/5] RUN")
    assert "exit code: 2" in step.error
    assert list(step.tail)[-1] == "make: *** [Makefile:9: src/a.o] Error 1"


def test_classic_builder() -> None:
    log = feed("Step 1/3 : FROM base\n ---> abc\nStep 2/3 : RUN make\n ---> Using cache\n"
               "Step 3/3 : RUN false\nboom\n")
    log.fail("The command '/bin/sh -c false' returned a non-zero code: 1")
    steps = log.user_steps
    assert [s.status for s in steps] == ["done", "cached", "failed"]
    assert list(steps[2].tail) == ["boom"]
