"""The three service names launch_ros imports (and names in annotations). Using one says what is missing."""


class _NotAvailable:
    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"composition_interfaces.srv.{type(self).__qualname__} is not installed (pip-only ROS 2): "
                           "composable nodes need a ROS 2 install or a colcon workspace")


class LoadNode(_NotAvailable):
    class Request(_NotAvailable):
        pass

    class Response(_NotAvailable):
        pass


class UnloadNode(LoadNode):
    pass


class ListNodes(LoadNode):
    pass
