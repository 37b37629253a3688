# -*- mode: ruby -*-
# vi: set ft=ruby :
#
# The contract with cdd and the provider blocks, written once for the Vagrantfiles that load this
# file (openstack-base, openstack, docker-swarm, devstack, openstack-dev, and the small
# environments of the integration tests, the benchmarks and `scripts/setup-host.sh --check`):
#
#   CDD_RUN_ID      names every machine cdd-<run id>-<machine> at the provider level (LXC
#                   container, VirtualBox VM, libvirt domain); cdd finds a killed run's leftovers
#                   by it. Default "manual".
#   CDD_SUBNET      first three octets of the private /24; each Vagrantfile has its own default.
#                   Environments that run at the same time on one host need different subnets.
#   CDD_PROVIDER    provider used when no --provider is given (default lxc).
#   CDD_LXC_BRIDGE  host bridge for the private network with lxc (default cddbr0, made by
#                   scripts/setup-host.sh).
#   CDD_BOX         box for virtualbox and libvirt (default debian/bookworm64).
#   CDD_SSH_CONFIG_DIR  set by cdd: each machine's `vagrant up` writes there, once it is done,
#                   what `vagrant ssh-config <machine>` would print, so that cdd need not start
#                   Vagrant once more to ask it (a Ruby start-up on the run's critical path).
#                   The directory exists as soon as a Vagrantfile loading this file is read.
#
# A docker provider block only for machines given `docker: true` (openstack-base): the others need
# systemd in the guest (and docker-swarm a Docker daemon of its own), which the sshd-as-PID-1
# image cannot give.

require "fileutils"
require "open3"
require "stringio"
require "tempfile"

module CddEnv
  RUN_ID = ENV.fetch("CDD_RUN_ID", "manual")
  unless RUN_ID.match?(/\A[A-Za-z0-9][A-Za-z0-9_.-]{0,40}\z/)
    abort "CDD_RUN_ID=#{RUN_ID.inspect}: use 1-41 characters among letters, digits, '_', '.' and '-'"
  end

  LXC_BOX    = "cdd/debian-bookworm"   # built by scripts/setup-host.sh --provider lxc
  DOCKER_IMAGE = "cdd/debian-bookworm-ssh:12"   # built by scripts/setup-host.sh --provider docker
  VM_BOX     = ENV["CDD_BOX"].to_s.empty? ? "debian/bookworm64" : ENV["CDD_BOX"]
  LXC_BRIDGE = ENV["CDD_LXC_BRIDGE"].to_s.empty? ? "cddbr0" : ENV["CDD_LXC_BRIDGE"]

  ENV["VAGRANT_DEFAULT_PROVIDER"] ||= ENV["CDD_PROVIDER"].to_s.empty? ? "lxc" : ENV["CDD_PROVIDER"]

  class HostBridgeMissing < Vagrant::Errors::VagrantError
    error_message("host bridge #{LXC_BRIDGE} is missing: run scripts/setup-host.sh --provider lxc")
  end

  class LibvirtNetworkFailed < Vagrant::Errors::VagrantError
    def error_message
      "could not #{@extra_data[:action]} the libvirt network #{@extra_data[:name]}: " \
        "#{@extra_data[:why]}"
    end
  end

  # A run's private libvirt network, defined and started once whichever of its machines comes
  # first, as vagrant-libvirt itself would (isolated, no DHCP, the host at .1).
  module LibvirtNetwork
    VIRSH = ["timeout", "60", "virsh", "-c", "qemu:///system"].freeze
    LOCK = "/run/lock/cdd-libvirt-networks.lock"

    def self.ensure(name, prefix)
      File.open(LOCK, File::RDWR | File::CREAT, 0o644) do |lock|
        lock.flock(File::LOCK_EX)
        _, status = Open3.capture2e(*VIRSH, "net-info", name)
        return if status.success?

        xml = "<network><name>#{name}</name>" \
              "<ip address='#{prefix}.1' netmask='255.255.255.0'/></network>"
        Tempfile.create(["cdd-network", ".xml"]) do |file|
          file.write(xml)
          file.flush
          [["net-define", file.path], ["net-start", name]].each do |args|
            out, status = Open3.capture2e(*VIRSH, *args)
            next if status.success?

            raise LibvirtNetworkFailed.new(action: "create", name: name, why: out.strip)
          end
        end
      end
    end

    # Removed, under the same lock, by the destroy of the last machine still on it: left to
    # vagrant-libvirt, every machine's destroy removes it, and two of them side by side (as
    # cdd runs them) raced, one failing on a network the other had just undefined.
    def self.release(name)
      File.open(LOCK, File::RDWR | File::CREAT, 0o644) do |lock|
        lock.flock(File::LOCK_EX)
        xml, status = Open3.capture2e(*VIRSH, "net-dumpxml", name)
        return unless status.success?                    # gone already
        return if xml.match?(/<network[^>]*\sconnections=/) # a machine still on it

        Open3.capture2e(*VIRSH, "net-destroy", name)     # fails only if it is not active
        out, status = Open3.capture2e(*VIRSH, "net-undefine", name)
        raise LibvirtNetworkFailed.new(action: "remove", name: name, why: out.strip) \
          unless status.success?
      end
    end
  end

  # The private /24's first three octets: CDD_SUBNET, else the Vagrantfile's default.
  def self.subnet(default)
    subnet = ENV["CDD_SUBNET"].to_s.empty? ? default : ENV["CDD_SUBNET"]
    unless subnet.match?(/\A\d{1,3}\.\d{1,3}\.\d{1,3}\z/)
      abort "CDD_SUBNET=#{subnet.inspect}: give the first three octets, e.g. #{default}"
    end
    subnet
  end

  # "address=name" for every machine, as vagrant/openstack-base/provision/common.sh takes them.
  def self.peers(subnet, machines)
    machines.map { |name, spec| "#{subnet}.#{spec[:octet]}=#{name}" }
  end

  COMMON = File.expand_path("../openstack-base/provision/common.sh", __dir__)

  # Every machine of `machines` (name => spec) on `subnet`, at .<spec[:octet]>: its provider
  # blocks, then common.sh first of all provisioners (the peers in /etc/hosts, the helpers the
  # role scripts use). The block adds the machine's own: |m, name, ip, spec|.
  # spec[:autostart] false leaves a machine out of a bare `vagrant up`.
  def self.machines(config, subnet, machines, docker: false)
    everyone = peers(subnet, machines)
    machines.each do |name, spec|
      ip = "#{subnet}.#{spec[:octet]}"
      config.vm.define name, autostart: spec.fetch(:autostart, true) do |m|
        machine(m, name, ip, spec, docker: docker)
        m.vm.provision "common", type: "shell", path: COMMON, args: [name, ip, *everyone]
        yield m, name, ip, spec
      end
    end
  end

  def self.configure(config)
    config.vm.box_check_update = false
    # Provisioning scripts are uploaded by the shell provisioner; nothing needs a shared folder
    # (and libvirt would otherwise want NFS).
    config.vm.synced_folder ".", "/vagrant", disabled: true
    ssh_config_after_up(config, ENV["CDD_SSH_CONFIG_DIR"].to_s)
  end

  # What `vagrant ssh-config <machine>` prints, written to dir/<machine> by the `vagrant up`
  # that built the machine: Vagrant's own ssh-config command, run in this process with what
  # it prints kept. Kept from the command itself, not from $stdout: one `vagrant up` builds
  # several machines on threads, and their lines must still reach the terminal. The trigger's
  # name line is also how cdd knows the machine is finished. Nothing written, cdd asks
  # `vagrant ssh-config` as it would of any Vagrantfile; so a failure here never fails the
  # machine.
  def self.ssh_config_after_up(config, dir)
    return if dir.empty?

    FileUtils.mkdir_p(dir)
    config.trigger.after :up do |t|
      t.name = "cdd: writing how to reach the machine"
      t.ruby do |env, machine|
        require Vagrant.source_root.join("plugins/commands/ssh_config/command").to_s
        kept = StringIO.new
        command = VagrantPlugins::CommandSSHConfig::Command.new([machine.name.to_s], env)
        command.define_singleton_method(:safe_puts) { |message = nil, _opts = nil| kept.puts(message || "") }
        command.execute
        path = File.join(dir, machine.name.to_s)
        File.write("#{path}.new", kept.string)
        File.rename("#{path}.new", path)
      rescue StandardError => e
        env.ui.warn("cdd: could not write how to reach #{machine.name} (#{e.message.lines.first&.strip}): " \
                    "cdd will ask `vagrant ssh-config`")
      end
    end
  end

  # One machine's provider blocks. spec: octet, memory (MiB), cpus, and nesting: true for a
  # machine that runs containers of its own (Docker). docker: true adds the docker provider, for
  # provisioners that start their services themselves (no systemd there).
  def self.machine(m, name, ip, spec, docker: false)
    m.vm.hostname = name

    # ---- lxc (tested here; vagrant-lxc): system container, systemd as PID 1 ----
    m.vm.provider "lxc" do |lxc, override|
      override.vm.box = LXC_BOX
      lxc.container_name = "cdd-#{RUN_ID}-#{name}"
      # vagrant-lxc's private_network (pipework) cannot find LXC 5 containers: a second NIC on a
      # host bridge instead; the box puts CDD_PRIVATE_ADDRESS on it once eth0 is up.
      lxc.customize "net.1.type", "veth"
      lxc.customize "net.1.link", LXC_BRIDGE
      lxc.customize "net.1.flags", "up"
      lxc.customize "net.1.name", "eth1"
      lxc.customize "environment", "CDD_PRIVATE_ADDRESS=#{ip}/24"
      if spec[:nesting]
        # dockerd inside: LXC's nesting profile, no AppArmor confinement (dockerd loads its own
        # profiles), and every device, since runc must grant its containers /dev/net/tun and
        # friends and a cgroup can only pass on what it was given.
        lxc.customize "include", "/usr/share/lxc/config/nesting.conf"
        lxc.customize "apparmor.profile", "unconfined"
        lxc.customize "cgroup.devices.allow", "a"
        lxc.customize "cgroup2.devices.allow", "a"
      end
      # ssh goes to the container's lxcbr0 address: no host port to race for
      override.vm.network "forwarded_port", id: "ssh", guest: 22, host: 2222, disabled: true
      override.trigger.before :up do |t|
        t.name = "host bridge #{LXC_BRIDGE}"
        t.ruby do |_env, _machine|
          raise HostBridgeMissing unless File.exist?("/sys/class/net/#{LXC_BRIDGE}/bridge")
        end
      end
    end

    if docker
      # ---- docker: a container with sshd as PID 1 ----
      m.vm.provider "docker" do |d, override|
        d.image = DOCKER_IMAGE
        d.name = "cdd-#{RUN_ID}-#{name}"
        d.has_ssh = true
        d.remains_running = true
        # labels: cdd finds a killed run's containers by them too; never pull from a registry
        d.create_args = ["--pull=never", "--label", "cdd.run=#{RUN_ID}", "--label", "cdd.vagrant=1"]
        # ssh goes straight to the container's address: no host port, so machines brought up by
        # separate `vagrant up` processes at once cannot race for port 2222
        override.vm.network "forwarded_port", id: "ssh", guest: 22, host: 2222, disabled: true
        override.vm.network "private_network", ip: ip, netmask: "24"
      end
    end

    # ---- virtualbox (self-hosted runners) ----
    m.vm.provider "virtualbox" do |vb, override|
      override.vm.box = VM_BOX
      vb.name = "cdd-#{RUN_ID}-#{name}"
      vb.memory = spec[:memory]
      vb.cpus = spec.fetch(:cpus, 1)
      # VirtualBox >= 6.1.28 only allows host-only addresses in 192.168.56.0/21 unless
      # /etc/vbox/networks.conf says otherwise: the defaults of these Vagrantfiles are in it.
      override.vm.network "private_network", ip: ip
    end

    # ---- libvirt (vagrant-libvirt; scripts/setup-host.sh --provider libvirt) ----
    m.vm.provider "libvirt" do |lv, override|
      override.vm.box = VM_BOX
      lv.default_prefix = "cdd-#{RUN_ID}-"   # domain cdd-<run id>-<machine>, disk <domain>.img
      lv.memory = spec[:memory]
      lv.cpus = spec.fetch(:cpus, 1)
      # the management network (eth0, DHCP + NAT) is the host's: one run's destroy must not
      # take it from another run still on it
      lv.management_network_keep = true
      # The private network is the run's own, named after it so that a killed run's is found
      # like its domains. vagrant-libvirt's lock against two machines creating it at once
      # holds only within one process, and cdd brings each machine up in its own.
      network = "cdd-#{RUN_ID}-private"
      override.vm.network "private_network", ip: ip, libvirt__network_name: network,
                                             libvirt__dhcp_enabled: false,
                                             libvirt__forward_mode: "none",
                                             libvirt__always_destroy: false
      override.trigger.before :up do |t|
        t.name = "private network #{network}"
        t.ruby { |_env, _machine| LibvirtNetwork.ensure(network, ip.sub(/\.\d+\z/, "")) }
      end
      override.trigger.after :destroy do |t|
        t.name = "private network #{network}"
        t.ruby { |_env, _machine| LibvirtNetwork.release(network) }
      end
    end
  end
end
