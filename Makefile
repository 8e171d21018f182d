# myonode — set-up, tests, demo, service, benchmarks. Everything installs itself.
#   make test    venv + locked packages + Debian tools the tests talk to, then lint and all of pytest
#   make test-fast  the same without the tests marked slow (a loop of about two minutes)
#   make lint    ruff (code) and mypy (types)
#   make demo    venv + locked packages, then the demo on the embedded default
#   make serve   run the node with ./settings.toml
#   make bench   run the benchmarks in bench/ (JSON on stdout)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | sha256sum | cut -c1-16)
# pytest-xdist processes: most tests wait on a peer (dcmtk, Orthanc, a node, a browser), so one more than
# the cores keeps both busy; every test is parallel-safe (own folders, ports, schemas, queue names)
TEST_WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))

# Debian packages the tests use as real peers and validators (package:command-or-file it provides).
DEBS := dcmtk:/usr/bin/storescu dicom3tools:/usr/bin/dciodvfy orthanc:/usr/sbin/Orthanc \
        r-base-core:/usr/bin/Rscript r-cran-lme4:/usr/lib/R/site-library/lme4/DESCRIPTION \
        chromium:/usr/bin/chromium chromium-driver:/usr/bin/chromedriver poppler-utils:/usr/bin/pdftoppm \
        orthanc-dicomweb:/usr/share/orthanc/plugins/libOrthancDicomWeb.so dcm2niix:/usr/bin/dcm2niix \
        libpango-1.0-0:/usr/share/doc/libpango-1.0-0 libpangoft2-1.0-0:/usr/share/doc/libpangoft2-1.0-0 \
        libdcmtk-dev:/usr/include/dcmtk/dcmnet/assoc.h g++:/usr/bin/g++ npm:/usr/bin/npm
# The compiled C-STORE receiver (node/dimse/compiled.py): DCMTK's network library from libdcmtk-dev.
RECEIVER := node/dimse/dcmtk/myonode-receiver
RECEIVER_LIBS := -ldcmtls -ldcmnet -ldcmdata -loflog -lofstd -lssl -lcrypto -lz

# The OHIF viewer served at /viewer (node/web/viewer.py): the built app of the npm package @ohif/app, fetched
# with `npm pack`, checked against the integrity pinned here, unpacked into a folder the Makefile owns (ignored by git),
# and mended where its cornerstone3D throws from a scroll timer outliving its viewport (deploy/ohif/patch.py).
OHIF_VERSION   := 3.13.2
OHIF_INTEGRITY := sha512-WZdxmpmG7rqFgW9ZJLcbgr3XCtLi1KDNPoMaeY5PPe6j4G4fjEjjkycZM6C6Zk2F87BKxFfpq+jd5xXZB9E8EA==
OHIF_DIR       := node/web/ohif
OHIF_STAMP     := $(OHIF_DIR)/.installed-$(OHIF_VERSION)

.PHONY: install debs receiver viewer lint test test-fast demo serve bench lock clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): requirements.lock pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP) receiver viewer

# Built where libdcmtk-dev is installed; elsewhere the node says so and receives with pynetdicom.
receiver:
	@if [ -e /usr/include/dcmtk/dcmnet/assoc.h ]; then $(MAKE) --no-print-directory $(RECEIVER); \
	else echo "libdcmtk-dev is not installed: $(RECEIVER) not built (make debs as root installs it; the node receives with pynetdicom until then)"; fi

$(RECEIVER): node/dimse/dcmtk/receiver.cc
	g++ -O2 -std=c++17 -pthread -Wall -Wextra -Werror -o $@ $< $(RECEIVER_LIBS)

viewer: $(OHIF_STAMP)

$(OHIF_STAMP): deploy/ohif/patch.py
	@command -v npm >/dev/null || { echo "npm is not installed: the OHIF viewer cannot be fetched (/viewer will say so)"; exit 0; }; \
	set -e; rm -rf $(OHIF_DIR).new && mkdir -p $(OHIF_DIR).new; \
	tarball=$$(cd $(OHIF_DIR).new && npm pack --silent @ohif/app@$(OHIF_VERSION)); \
	got="sha512-$$(openssl dgst -sha512 -binary $(OHIF_DIR).new/$$tarball | base64 -w0)"; \
	if [ "$$got" != "$(OHIF_INTEGRITY)" ]; then echo "@ohif/app@$(OHIF_VERSION): integrity $$got, expected $(OHIF_INTEGRITY)" >&2; exit 1; fi; \
	tar xzf $(OHIF_DIR).new/$$tarball -C $(OHIF_DIR).new --strip-components=1 package/dist package/LICENSE; \
	python3 deploy/ohif/patch.py $(OHIF_DIR).new/dist; \
	rm $(OHIF_DIR).new/$$tarball && rm -rf $(OHIF_DIR) && mv $(OHIF_DIR).new $(OHIF_DIR) && touch $@

debs:
	@missing=""; for entry in $(DEBS); do pkg=$${entry%%:*}; file=$${entry#*:}; \
	  [ -e "$$file" ] || missing="$$missing $$pkg"; done; \
	if [ -z "$$missing" ]; then echo "debian packages: all present"; \
	elif [ "$$(id -u)" = 0 ]; then echo "installing debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "missing debian packages (run as root to install):$$missing" >&2; exit 1; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/mypy

test: debs install lint
	MYONODE_TEST_REQUIRE=postgres,redis,registry $(BIN)/python -m pytest -n $(TEST_WORKERS)

test-fast: debs install lint
	MYONODE_TEST_REQUIRE=postgres,redis,registry $(BIN)/python -m pytest -n $(TEST_WORKERS) -m "not slow"

demo: install
	$(BIN)/myonode demo

serve: install
	$(BIN)/myonode serve

bench: install
	@for b in bench/*.py; do echo "# $$b" >&2; $(BIN)/python $$b || exit 1; done

lock: | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	( echo "# Pinned versions myonode is tested with. Regenerate with: make lock"; \
	  $(BIN)/pip freeze --exclude-editable | grep -v '^myonode' ) > requirements.lock

clean:
	rm -rf $(VENV) var build *.egg-info $(RECEIVER)
