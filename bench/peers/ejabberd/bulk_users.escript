#!/usr/bin/env escript
%% Bulk accounts for the benchmark's ejabberd node.
%%
%% usage (from server.sh): ERL_FLAGS="..." bulk_users.escript NODE COOKIE
%%                         DIST_PORT DOMAIN PREFIX COUNT
%%
%% PREFIX1@DOMAIN must already exist (registered with ejabberdctl, so its
%% SCRAM record is exactly what ejabberd stores). This reads that record from
%% the node's mnesia table 'passwd' and writes a copy for PREFIX2..PREFIXCOUNT
%% in one remote call, so COUNT accounts take seconds instead of the ~0.5 s
%% per account of one ejabberdctl call each.

main([Node0, Cookie, DistPort, Domain, Prefix, Count0]) ->
    Node = list_to_atom(Node0),
    Count = list_to_integer(Count0),
    Self = list_to_atom("bulk" ++ os:getpid() ++ "@localhost"),
    {ok, _} = net_kernel:start([Self, shortnames]),
    erlang:set_cookie(node(), list_to_atom(Cookie)),
    _ = DistPort,
    Host = list_to_binary(Domain),
    First = list_to_binary(Prefix ++ "1"),
    case rpc:call(Node, mnesia, dirty_read, [passwd, {First, Host}]) of
        [Template] ->
            Recs = [setelement(2, Template,
                               {list_to_binary(Prefix ++ integer_to_list(I)), Host})
                    || I <- lists:seq(2, Count)],
            write(Node, Recs),
            io:format("~b accounts ~s1..~s~b@~s~n", [Count, Prefix, Prefix, Count, Domain]);
        Other ->
            io:format(standard_error, "no stored account ~s@~s: ~p~n", [First, Host, Other]),
            halt(1)
    end;
main(_) ->
    io:format(standard_error, "usage: bulk_users.escript NODE COOKIE DIST_PORT DOMAIN PREFIX COUNT~n", []),
    halt(2).

%% In chunks, so no single message or remote call grows without bound.
write(_Node, []) ->
    ok;
write(Node, Recs) ->
    {Chunk, Rest} = lists:split(min(10000, length(Recs)), Recs),
    ok = rpc:call(Node, lists, foreach, [fun mnesia:dirty_write/1, Chunk]),
    write(Node, Rest).
