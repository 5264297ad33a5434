"""Docker Swarm over a cluster's private network: one manager, two workers, a
replicated service from an image loaded offline, the overlay network's service
name reached from another member, and a drained member's tasks moved.

The tests run in file order on one cluster: each builds on the one before."""

import shlex

import pytest

from harness.images import dockerimage
from harness.vm import timeouts

pytestmark = [pytest.mark.vm, pytest.mark.promise("docker_shipped"),
              pytest.mark.cluster(size=3)]

SERVICE, NETWORK, PORT = "harness-web", "harness-overlay", 8080
# Each task serves its node's host name (the service's --hostname template), so an
# answer tells which member's task gave it. busybox's own httpd, from the image.
SERVE = (f"busybox mkdir -p /srv && hostname > /srv/index.html && "
         f"exec busybox httpd -f -p {PORT} -h /srv")
RUNNING = f"docker service ps {SERVICE} --filter desired-state=running " \
          "--format '{{.Node}} {{.CurrentState}}'"


def hostnames(cluster) -> dict[str, str]:
    """Member name -> the host name Swarm knows it by."""
    return {m.name: m.succeed("hostname").strip() for m in cluster.members}


def test_swarm_forms_and_every_member_is_ready(cluster, guest_output):
    manager, *workers = cluster.members
    wait = timeouts.get("ready")
    manager.succeed(f"docker swarm init --advertise-addr {cluster.address(manager)}", wait)
    # The join token goes in through stdin, so no command line (nor the log) has it.
    token = manager.succeed("docker swarm join-token -q worker").strip()
    for m in workers:
        m.succeed("umask 077 && cat > /run/harness-swarm-token", stdin=token.encode())
        m.succeed("docker swarm join --token \"$(cat /run/harness-swarm-token)\" "
                  f"--advertise-addr {cluster.address(m)} {cluster.address(manager)}:2377", wait)
        m.succeed("rm /run/harness-swarm-token")
    manager.wait_until_succeeds(
        "test \"$(docker node ls --format '{{.Status}}' | grep -cx Ready)\" -eq "
        f"{len(cluster.members)}", wait)
    guest_output("docker-node-ls", manager.succeed("docker node ls"))
    nodes = manager.succeed("docker node ls --format '{{.Hostname}} {{.Status}}'").split("\n")
    assert sorted(n for n in nodes if n) == sorted(f"{h} Ready" for h in
                                                   hostnames(cluster).values())


def test_a_replicated_service_from_an_offline_image_spreads_over_every_member(
        cluster, guest_output):
    manager = cluster.members[0]
    image = dockerimage.build()
    for m in cluster.members:  # no registry: every member loads the image itself
        assert dockerimage.TAG in m.succeed("docker load", stdin=image)
    manager.succeed(f"docker network create --driver overlay --attachable {NETWORK}")
    manager.succeed(
        f"docker service create --detach --no-resolve-image --name {SERVICE} "
        f"--replicas {len(cluster.members)} --network {NETWORK} "
        f"--hostname '{{{{.Node.Hostname}}}}' {dockerimage.TAG} sh -c {shlex.quote(SERVE)}")
    manager.wait_until_succeeds(
        f"test \"$({RUNNING} | grep -c ' Running ')\" -eq {len(cluster.members)}",
        timeouts.get("ready"))
    guest_output("docker-service-ps", manager.succeed(f"docker service ps {SERVICE}"))
    nodes = [line.split()[0] for line in manager.succeed(RUNNING).splitlines()]
    assert sorted(nodes) == sorted(hostnames(cluster).values())  # one task on each


def test_a_container_reaches_a_task_on_another_member_by_the_service_name(
        cluster, guest_output):
    client = cluster.members[1]
    names = hostnames(cluster)
    others = [h for n, h in names.items() if n != client.name]
    # Six connections to the service's virtual IP, which balances them over its
    # tasks in turn; answered until one comes from a task on another member.
    ask = f"for i in 1 2 3 4 5 6; do busybox wget -q -O - http://{SERVICE}:{PORT}/; done"
    run = (f"docker run --rm --network {NETWORK} {dockerimage.TAG} sh -c {shlex.quote(ask)}"
           " > /tmp/harness-answers; grep -qx " + " ".join(f"-e {h}" for h in others)
           + " /tmp/harness-answers")
    client.wait_until_succeeds(run, timeouts.get("ready"))
    answers = guest_output("answers-by-service-name",
                           client.succeed("cat /tmp/harness-answers")).split()
    assert set(answers) & set(others), answers


def test_a_drained_members_tasks_are_rescheduled_on_the_others(cluster, guest_output):
    manager, drained = cluster.members[0], cluster.members[2]
    names = hostnames(cluster)
    manager.succeed(f"docker node update --availability drain {names[drained.name]}")
    manager.wait_until_succeeds(
        f"test \"$({RUNNING} | grep -c ' Running ')\" -eq {len(cluster.members)} && "
        f"! {RUNNING} | grep -q '^{names[drained.name]} '", timeouts.get("ready"))
    guest_output("docker-node-ls-drained", manager.succeed("docker node ls"))
    guest_output("docker-service-ps-drained", manager.succeed(f"docker service ps {SERVICE}"))
    nodes = [line.split()[0] for line in manager.succeed(RUNNING).splitlines()]
    assert len(nodes) == len(cluster.members) and names[drained.name] not in nodes
    assert set(nodes) <= {h for n, h in names.items() if n != drained.name}
