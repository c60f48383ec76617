"""The ROS 2 packaging, checked without ROS: package.xml files, the interface package's build files,
dependencies named for every import of the nodes and launch files, executables, configs, launch files."""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
import tomllib
import xml.etree.ElementTree as ET
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from m3_grasp.ros.grasp_handler import GraspParams
from m3_memory.ros.interfaces import INTERFACES
from m3_memory.ros.params import MappingParams, QueryParams

ROOT = Path(__file__).resolve().parents[1]
NODE_DIRS = (ROOT / "m3_memory" / "ros", ROOT / "m3_grasp" / "ros")
LAUNCH = sorted((ROOT / "launch").glob("*.launch.py"))
CONFIGS = {"mapping": ("m3_mapping", MappingParams), "query": ("m3_query", QueryParams), "grasp": ("m3_grasp", GraspParams)}
# Python module -> rosdep key, where they differ
ROSDEP_KEYS = {"tf2_ros": "tf2_ros_py", "numpy": "python3-numpy", "yaml": "python3-yaml"}
OWN = {"m3_memory", "m3_grasp"}
PIP_ONLY = {"rosbags"}  # no rosdep key on every distro: installed with pip (package.xml says so)


def dependencies(package_xml: Path, kinds=("depend", "exec_depend", "build_depend", "buildtool_depend")) -> set[str]:
    root = ET.parse(package_xml).getroot()
    return {e.text.strip() for kind in kinds for e in root.findall(kind)}


def imports(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at module level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"__future__"}


def console_scripts() -> dict[str, str]:
    text = (ROOT / "setup.py").read_text()
    return dict(re.findall(r'"(\w+) = ([\w.]+:\w+)"', text))


def launch_nodes(path: Path) -> list[tuple[str, str]]:
    """(package, executable) of every launch_ros Node(...) in a launch file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Node":
            kw = {k.arg: k.value.value for k in node.keywords if isinstance(k.value, ast.Constant)}
            found.append((kw["package"], kw["executable"]))
    return found


def test_package_xmls_are_format_3():
    for path, build_type in ((ROOT / "package.xml", "ament_python"), (ROOT / "m3_msgs" / "package.xml", "ament_cmake")):
        root = ET.parse(path).getroot()
        assert root.get("format") == "3" and root.find("export/build_type").text == build_type
        for tag in ("name", "version", "description", "maintainer", "license"):
            assert (root.findtext(tag) or "").strip(), (path, tag)


def test_package_xmls_validate_with_catkin_pkg():
    package = pytest.importorskip("catkin_pkg.package")
    for path in (ROOT / "package.xml", ROOT / "m3_msgs" / "package.xml"):
        package.parse_package(path).validate()


def test_interface_package_generates_every_interface():
    msgs = ROOT / "m3_msgs"
    root = ET.parse(msgs / "package.xml").getroot()
    assert {"ament_cmake", "rosidl_default_generators"} <= {e.text for e in root.findall("buildtool_depend")}
    assert "rosidl_default_runtime" in {e.text for e in root.findall("exec_depend")}
    assert root.findtext("member_of_group") == "rosidl_interface_packages"
    files = sorted(p.relative_to(msgs).as_posix() for p in [*msgs.glob("srv/*.srv"), *msgs.glob("action/*.action")])
    assert files == sorted(INTERFACES)
    cmake = (msgs / "CMakeLists.txt").read_text()
    generated = re.search(r"rosidl_generate_interfaces\(\$\{PROJECT_NAME\}(.*?)\)", cmake, re.S).group(1)
    assert sorted(re.findall(r'"([^"]+)"', generated)) == files
    used = {m for f in files for m in re.findall(r"^\s*(\w+)/\w+", (msgs / f).read_text(), re.M)}
    assert used == set(re.search(r"DEPENDENCIES ([\w ]+)", generated).group(1).split())
    assert used <= dependencies(msgs / "package.xml")
    assert all(f"find_package({pkg} REQUIRED)" in cmake for pkg in used | {"ament_cmake", "rosidl_default_generators"})
    if any(f.startswith("action/") for f in files):
        assert "action_msgs" in dependencies(msgs / "package.xml")


def test_every_import_of_the_nodes_and_launch_files_is_a_dependency():
    deps = dependencies(ROOT / "package.xml")
    sources = [p for d in NODE_DIRS for p in d.glob("*.py")] + LAUNCH
    for path in sources:
        for module in imports(path) - OWN - PIP_ONLY:
            assert ROSDEP_KEYS.get(module, module) in deps, f"{path.relative_to(ROOT)} imports {module}"
        for pkg in re.findall(r'"(\w+)/(?:msg|srv|action)/\w+"', path.read_text()):  # message types named as strings
            assert pkg in deps, f"{path.relative_to(ROOT)} builds {pkg} messages"
    for path in LAUNCH:
        for package, _ in launch_nodes(path):
            assert package == "m3_memory" or package in deps, f"{path.name} starts a node of {package}"


def test_only_node_modules_import_ros():
    for d in NODE_DIRS:
        for path in d.glob("*.py"):
            ros = imports(path) & {"rclpy", "tf2_ros", "rosidl_runtime_py", "rcl_interfaces", "m3_msgs", "sensor_msgs",
                                   "visualization_msgs", "launch", "launch_ros"}
            adapters = ("node_support.py", "action_clients.py")  # rclpy behind the handlers' ROS-free interfaces
            assert not ros or path.name.endswith("_node.py") or path.name in adapters, (path, ros)


def test_launch_files_start_installed_executables():
    scripts = console_scripts()
    for path in LAUNCH:
        for package, executable in launch_nodes(path):
            if package == "m3_memory":
                assert executable in scripts, f"{path.name}: no console script {executable} in setup.py"
    for name, target in scripts.items():
        module, func = target.split(":")
        tree = ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())
        assert any(isinstance(n, ast.FunctionDef) and n.name == func for n in tree.body), target


def test_pyproject_lists_the_same_scripts():
    """setuptools >= 61 reads scripts from pyproject.toml and ignores setup.py's (ROS 2 Jazzy)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["scripts"] == console_scripts()


def test_setup_installs_launch_config_and_urdf():
    text = (ROOT / "setup.py").read_text()
    for folder, patterns in (("launch", ["*.py"]), ("config", ["*.yaml", "*.rviz"]), ("urdf", ["*"])):
        globs = " + ".join(f'glob("{folder}/{pattern}")' for pattern in patterns)
        assert f'("share/" + package_name + "/{folder}", {globs})' in text
    assert {p.name for p in LAUNCH} == {"build.launch.py", "query.launch.py", "grasp.launch.py", "tabletop_demo.launch.py"}
    assert (ROOT / "urdf" / "b1_z1.urdf").is_file()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_yaml_holds_the_declared_defaults(name):
    node, params_cls = CONFIGS[name]
    data = yaml.safe_load((ROOT / "config" / f"{name}.yaml").read_text())
    assert list(data) == [node] and list(data[node]) == ["ros__parameters"]
    values = data[node]["ros__parameters"]
    assert list(values) == [f.name for f in fields(params_cls)]
    for f in fields(params_cls):
        assert type(values[f.name]) is type(f.default) and values[f.name] == f.default, f.name  # ROS parameter types are strict
        assert f.metadata["description"], f.name


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_launch_files_are_python_with_a_description(path):
    tree = ast.parse(path.read_text())
    assert any(isinstance(n, ast.FunctionDef) and n.name == "generate_launch_description" for n in tree.body)
    compile(path.read_text(), str(path), "exec")
    for rel in re.findall(r'SHARE / "(\w+)" / (?:f?"([\w.{}]+)")', path.read_text()):
        folder, name = rel
        if "{" not in name:
            assert (ROOT / folder / name).is_file(), (path.name, rel)


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_launch_descriptions_build(path):
    pytest.importorskip("launch_ros")  # first: without ROS, "launch" would find the repository's launch/ folder
    import launch
    spec = importlib.util.spec_from_file_location(path.name.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    assert isinstance(description, launch.LaunchDescription)
    names = {arg.name for arg in description.get_launch_arguments()}
    assert names >= ({"memory"} if path.name != "build.launch.py" else {"params_file", "output_dir"})


# What colcon-python-setup-py (0.2.9) runs to read setup.py: the distribution after setuptools'
# configuration (setup.py, setup.cfg and pyproject.toml), printed with repr and read back with
# ast.literal_eval. A value whose repr is not a literal (setuptools >= 61 turns pyproject's
# requires-python into a SpecifierSet) stops every colcon build (colcon-python-setup-py issue 56).
COLCON_READER = """
import sys
from distutils.core import run_setup
dist = run_setup('setup.py', script_args=('--dry-run',), stop_after='config')
skip = ('cmdclass', 'distclass', 'ext_modules', 'metadata')
data = {k: v for k, v in dist.__dict__.items()
        if not k.startswith('_') and not callable(v) and k not in skip and k not in dist.display_option_names}
data['metadata'] = {k: v for k, v in dist.metadata.__dict__.items() if k not in ('license_files', 'provides_extras')}
sys.stdout.write(repr(data))
"""


def test_colcon_reads_the_setup_metadata():
    """colcon's setup.py reader accepts the metadata on this setuptools (>= 68 as on Jazzy), and the
    Python floor is still in it."""
    import ast
    import subprocess

    import setuptools

    assert int(setuptools.__version__.split(".")[0]) >= 68, "this check is meant for setuptools >= 68 (Jazzy has 68.1)"
    out = subprocess.run([sys.executable, "-c", COLCON_READER], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    data = ast.literal_eval(out)  # what colcon does with it; a SpecifierSet here is a SyntaxError
    assert data["metadata"]["python_requires"] == ">=3.10"
    assert data["metadata"]["name"] == "m3_memory"
    assert sorted(data["entry_points"]["console_scripts"]) == sorted(f"{k} = {v}" for k, v in console_scripts().items())


def test_colcon_package_identification_when_installed():
    """The same through colcon-python-setup-py itself, where it is installed (colcon workspaces, CI)."""
    reader = pytest.importorskip("colcon_python_setup_py.package_identification.python_setup_py")
    info = reader.get_setup_information(ROOT / "setup.py")
    assert info["metadata"]["python_requires"] == ">=3.10"


def calls_named(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", None) == name]


@pytest.mark.parametrize("path", LAUNCH, ids=lambda p: p.name)
def test_every_launch_file_takes_use_sim_time_for_every_node(path):
    tree = ast.parse(path.read_text())
    declared = [c for c in calls_named(tree, "DeclareLaunchArgument") if "use_sim_time" in ast.unparse(c)]
    assert declared, f"{path.name} declares no use_sim_time argument"
    for node in calls_named(tree, "Node"):
        parameters = next((k.value for k in node.keywords if k.arg == "parameters"), None)
        assert parameters is not None and "sim_time" in ast.unparse(parameters), f"{path.name}: {ast.unparse(node)[:80]}"


def test_demo_includes_are_scoped_with_their_own_params_file():
    """Included launch files are not scoped: the first include's params_file would reach the second's node."""
    path = ROOT / "launch" / "tabletop_demo.launch.py"
    tree = ast.parse(path.read_text())
    groups = calls_named(tree, "GroupAction")
    includes = calls_named(tree, "IncludeLaunchDescription")
    assert includes and groups
    for include in includes:
        group = next((g for g in groups if any(n is include for n in ast.walk(g))), None)
        assert group is not None, "an include outside a GroupAction"
        assert any(k.arg == "scoped" and getattr(k.value, "value", None) is True for k in group.keywords)
        function = next(f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef) and any(n is include for n in ast.walk(f)))
        assert "'params_file'" in ast.unparse(function), "the include does not name its params_file"


def launched_nodes(path: Path, arguments: dict[str, str]) -> dict[str, dict]:
    """Evaluate a launch description as `ros2 launch` would (without starting processes): for every
    launch_ros Node, its name -> {"files": parameter files, "params": parameter dicts, evaluated}."""
    from launch.utilities import perform_substitutions
    from launch_ros.actions import Node
    from launch_ros.parameter_descriptions import ParameterFile

    import launch

    spec = importlib.util.spec_from_file_location(path.name.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    context = launch.LaunchContext()
    context.launch_configurations.update(arguments)
    found: dict[str, dict] = {}

    def visit(entity) -> None:
        condition = getattr(entity, "condition", None)
        if condition is not None and not condition.evaluate(context):
            return
        if isinstance(entity, Node):
            files, params = [], {}
            for entry in entity._Node__parameters or []:  # normalized: ParameterFile, or a dict with substitution keys
                if isinstance(entry, ParameterFile):
                    files.append(str(entry.evaluate(context)))
                elif isinstance(entry, dict):
                    for key, value in entry.items():
                        params[perform_substitutions(context, list(key))] = value
                else:
                    files.append(perform_substitutions(context, list(entry)))
            name = entity._Node__node_name or entity._Node__node_executable
            found[name if isinstance(name, str) else perform_substitutions(context, list(name))] = {"files": files,
                                                                                                   "params": params}
            return
        for sub in entity.visit(context) or []:
            visit(sub)

    visit(module.generate_launch_description())
    return found


def test_demo_gives_each_node_its_own_params_file_and_sim_time():
    pytest.importorskip("launch_ros")
    nodes = launched_nodes(ROOT / "launch" / "tabletop_demo.launch.py", {"memory": "/tmp/scene.m3", "use_sim_time": "true"})
    assert [Path(f).name for f in nodes["m3_query"]["files"]] == ["query.yaml"]
    assert [Path(f).name for f in nodes["m3_grasp"]["files"]] == ["grasp.yaml"]
    assert "robot_state_publisher" in nodes and all("use_sim_time" in n["params"] for n in nodes.values())


def test_rviz_config_shows_the_latched_outputs():
    """config/m3.rviz subscribes to what the query node publishes, transient-local (latched) like the publishers."""
    config = yaml.safe_load((ROOT / "config" / "m3.rviz").read_text())
    displays = {d["Class"]: d for d in config["Visualization Manager"]["Displays"]}
    node = (ROOT / "m3_memory" / "ros" / "query_node.py").read_text()
    for cls, topic in (("rviz_default_plugins/Image", "heatmap"), ("rviz_default_plugins/Marker", "target_marker")):
        sub = displays[cls]["Topic"]
        assert sub["Value"] == f"/m3_query/{topic}" and f'"~/{topic}", LATCHED' in node
        assert sub["Durability Policy"] == "Transient Local" and sub["Reliability Policy"] == "Reliable"
    assert {"rviz_default_plugins/TF", "rviz_default_plugins/RobotModel"} <= set(displays)
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == "map"
