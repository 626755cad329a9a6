"""``rig-edge scan opcua``: the node tree below Objects with node ids (by namespace URI, as
the config wants them), values with their EngineeringUnits, and the sensor ``browse_root``
would map each variable to, to help write a machine's node mapping."""

from __future__ import annotations

from asyncua import Client, Node, ua

from edge.inputs.opcua.input import read_engineering_unit, sensor_for_browse_name


async def scan_opcua(endpoint: str, max_depth: int = 6, timeout: float = 10) -> list[str]:
    lines: list[str] = []
    async with Client(endpoint, timeout=timeout) as client:
        namespaces = await client.get_namespace_array()

        async def walk(node: Node, depth: int) -> None:
            if depth > max_depth:
                return
            for child in await node.get_children():
                name = (await child.read_browse_name()).Name
                node_class = await child.read_node_class()
                node_id = child.nodeid
                text = node_id.to_string()
                if node_id.NamespaceIndex > 0 and node_id.NamespaceIndex < len(namespaces):
                    text = f"nsu={namespaces[node_id.NamespaceIndex]};" + text.split(";", 1)[1]
                if node_class == ua.NodeClass.Variable:
                    try:
                        value = await child.read_value()
                    except Exception as exc:
                        value = f"<{type(exc).__name__}>"
                    unit, _ = await read_engineering_unit(child)
                    sensor = sensor_for_browse_name(name)
                    shown = f"{name} = {value!r}" + (f" {unit}" if unit else "")
                    hint = f"   (browse_root maps it to {sensor})" if sensor else ""
                    lines.append(f"{'  ' * depth}{shown}   [{text}]{hint}")
                elif node_class in (ua.NodeClass.Object,):
                    lines.append(f"{'  ' * depth}{name}/   [{text}]")
                    await walk(child, depth + 1)

        await walk(client.nodes.objects, 0)
    return lines
