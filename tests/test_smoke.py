def test_hosts(bridge, tango_host):
    reply = bridge.get("/tango/rest/rc3/hosts")
    assert reply.status == 200
    assert list(reply.json()) == [tango_host]
