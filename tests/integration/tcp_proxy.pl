# A one-process TCP proxy for tests that make a server go away and come back: listens on
# 127.0.0.1 (on ARGV[2] if given, else a free port), writes the port to ARGV[0], and forwards
# every connection to 127.0.0.1:ARGV[1]. Killing it cuts every connection at once.
#   perl tcp_proxy.pl PORTFILE TARGET_PORT [LISTEN_PORT]
use strict; use warnings; use IO::Socket::INET; use IO::Select;
my ($portfile, $target, $listen) = @ARGV;
my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $listen // 0, Listen => 64, ReuseAddr => 1)
    or die "listen: $!";
open(my $f, '>', "$portfile.tmp") or die $!; print $f $l->sockport, "\n"; close $f; rename "$portfile.tmp", $portfile;
my $sel = IO::Select->new($l); my %peer;
while (1) {
    for my $s ($sel->can_read) {
        if ($s == $l) {
            my $c = $l->accept or next;
            my $u = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $target) or do { close $c; next };
            $peer{$c} = $u; $peer{$u} = $c; $sel->add($c, $u);
            next;
        }
        my $o = $peer{$s}; my $buf;
        my $n = sysread($s, $buf, 65536);
        if (!$n) { $sel->remove($s, $o); delete @peer{$s, $o}; close $s; close $o; next; }
        my $off = 0;
        while ($off < $n) { my $w = syswrite($o, $buf, $n - $off, $off); last unless defined $w; $off += $w; }
    }
}
