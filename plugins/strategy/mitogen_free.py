"""Ansible's free strategy run through Mitogen (https://mitogen.networkgenomics.com/ansible_detailed.html).

Without it, every task on every host is a new `docker exec` and a new Python that unpacks and imports
the module (about 0.3 s of CPU each); Mitogen keeps one Python per container for the whole run and
sends it the modules. A full converge of the lab takes a third of the time. It maps the lab's
`docker` connection to its own transport; the modules and what they do are Ansible's.

Before a play runs, it lists the installed collections once, as mitogen_linear.py does (why: there).
"""

import ansible.collections.list
import ansible_mitogen.loaders
import ansible_mitogen.strategy

Base = ansible_mitogen.loaders.strategy_loader.get("free", class_only=True)


class StrategyModule(ansible_mitogen.strategy.StrategyMixin, Base):  # type: ignore[misc,valid-type]
    def run(self, iterator, play_context):  # type: ignore[no-untyped-def]
        list(ansible.collections.list.list_collection_dirs())  # a generator: it imports only as it is read
        return super().run(iterator, play_context)
