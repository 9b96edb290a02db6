# Latency vs. offered rate of the chat and muc scenarios (bench/run.sh).
#
#   gnuplot -c bench/plot.gp OUT.png TITLE DATA1 [DATA2 ... DATA7]
#   gnuplot -e "xlab='...'; bound=50" -c bench/plot.gp OUT.png TITLE DATA...
#
# Each DATA file is bench/results/chat-SERVER.dat: a header line
# "offered SERVER_delivered SERVER_p50 SERVER_p99", then one line per rate
# step (msgs/s, msgs/s, ms, ms). With one file, p50 and p99 of that server are
# drawn; with several, the p99 of each. The dashed lines are the 10 ms and
# 100 ms bounds the chat results are read at, and `bound` (ms) if set: the
# muc results are read at 50 ms. The muc data (bench/results/muc-SIZE-
# SERVER.dat) has offered deliveries in its first column; `xlab` says so.

if (ARGC < 3) {
	print "usage: gnuplot -c plot.gp OUT.png TITLE DATA1 [DATA2 ...]"
	exit status 2
}

set terminal pngcairo size 1000,620 font ",11" noenhanced
set output ARG1
set title ARG2
set key top left box opaque
set grid
set logscale x 10
set logscale y 10
set format x "%.0s%c"
if (!exists("xlab")) xlab = "offered rate (messages/s, all pairs together)"
set xlabel xlab
set ylabel "end-to-end latency (ms)"
set yrange [0.05:*]
set datafile commentschars "#"
set style data linespoints

set arrow 1 from graph 0, first 10 to graph 1, first 10 nohead dashtype 2 lc rgb "#888888"
set arrow 2 from graph 0, first 100 to graph 1, first 100 nohead dashtype 2 lc rgb "#888888"
if (exists("bound")) {
	set arrow 3 from graph 0, first bound to graph 1, first bound nohead dashtype 3 lc rgb "#cc4444"
}

if (ARGC == 3) {
	plot ARG3 using 1:3 title columnheader(3) pt 6 lw 2, \
	     ARG3 using 1:4 title columnheader(4) pt 7 lw 2
} else {
	files = ""
	do for [i = 3:ARGC] {
		files = files . " " . value("ARG" . i)
	}
	plot for [i = 1:words(files)] word(files, i) using 1:4 title columnheader(4) pt 7 lw 2
}
