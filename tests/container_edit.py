"""Plant edited tables in a copy of a container, as a hostile or damaged file would carry them:
the tables go through the writer's own index encoding (edgemoe.format.container.encode_index)
and reach the runtime's reader exactly as a converted file's would."""
from edgemoe.format.container import encode_index, open_container, replace_section


def replace_tables(path, config=None, tensors=None, experts=None, low_bit_experts=None) -> None:
    c = open_container(str(path))
    replace_section(str(path), "index", encode_index(c.config if config is None else config,
                                                      c.tensors if tensors is None else tensors,
                                                      c.experts if experts is None else experts,
                                                      c.low_bit_experts if low_bit_experts is None else low_bit_experts))


def assert_config_edit_refused(path, edit, message) -> None:
    """The container at `path` with its config changed by edit(config) (list fields as lists) no
    longer loads: FormatError matching `message`."""
    import pytest

    import edgemoe
    from edgemoe.errors import FormatError

    cfg = {k: list(v) if isinstance(v, (list, tuple)) else v for k, v in open_container(str(path)).config.items()}
    edit(cfg)
    replace_tables(path, config=cfg)
    with pytest.raises(FormatError, match=message):
        edgemoe.load(str(path))
