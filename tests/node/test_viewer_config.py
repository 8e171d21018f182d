"""The OHIF configuration myonode writes (node/web/viewer.py), evaluated by a real JavaScript engine (Node.js, which
npm brings): valid script, myonode's DICOMweb at the page's origin as the only data source, upload per role, and
the SR guard skipping exactly the groups without coordinates."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from node.web.viewer import app_config

EVALUATE = """
const window = {location: {origin: "https://node.example:8443"}};
%s
const guard = window.config.customizationService.onBeforeSRAddMeasurement.$set;
const spatial = {coords: [{ReferencedSOPSequence: {ReferencedSOPInstanceUID: "1.2"}}], label: "a"};
const flat = {coords: [], label: "b"};
console.log(JSON.stringify({config: window.config, spatial: guard({measurement: spatial}),
                            flat: guard({measurement: flat})}));
"""


def evaluated(script: str) -> dict:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.fail("Node.js missing: `make test` installs npm (Debian), which brings it")
    out = subprocess.run([node, "-e", EVALUATE % script], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.parametrize(("root_path", "may_store"), [("", True), ("/myonode", False)])
def test_the_written_configuration_is_valid_javascript_with_myonodes_dicomweb_only(root_path: str,
                                                                                  may_store: bool) -> None:
    result = evaluated(app_config(root_path=root_path, may_store=may_store))
    config = result["config"]
    assert config["routerBasename"] == f"{root_path}/viewer"
    (source,) = config["dataSources"]
    settings = source["configuration"]
    root = f"https://node.example:8443{root_path}/dicomweb"
    assert (settings["qidoRoot"], settings["wadoRoot"], settings["wadoUriRoot"]) == (root, root, root)
    assert config["defaultDataSourceName"] == source["sourceName"]
    assert settings["dicomUploadEnabled"] is may_store
    assert settings["segmentation"]["store"] == {"defaultMode": "bitmap", "transferSyntaxUID": "1.2.840.10008.1.2.1"}


def test_the_sr_guard_passes_groups_with_coordinates_and_empties_the_reference_of_the_others() -> None:
    result = evaluated(app_config(root_path="", may_store=False))
    assert result["spatial"]["coords"] == [{"ReferencedSOPSequence": {"ReferencedSOPInstanceUID": "1.2"}}]
    assert result["flat"] == {"coords": [{}], "label": "b"}  # OHIF reads coords[0].ReferencedSOPSequence: none
